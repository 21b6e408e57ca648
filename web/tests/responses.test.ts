import assert from "node:assert/strict";
import { test } from "node:test";
import { initialResponseState, jobIdOf, responseIdOf, responseReducer, type ResponseEvent } from "../lib/responses";

const ev = (sequence_number: number, type: string, extra: Partial<ResponseEvent> = {}) => ({
  kind: "event" as const,
  event: { type, sequence_number, ...extra },
});
const snapshot = (status: string) => ({ id: "resp_1", model: "debug/echo", status });

test("a response's id and its job's id name each other", () => {
  assert.equal(responseIdOf("job_abc"), "resp_abc");
  assert.equal(jobIdOf("resp_abc"), "job_abc");
});

test("deltas build the text once each, across a resumed stream, and .done has the last word", () => {
  let s = initialResponseState(snapshot("queued"));
  s = responseReducer(s, ev(0, "response.created", { response: snapshot("queued") }));
  s = responseReducer(s, ev(1, "response.in_progress", { response: snapshot("in_progress") }));
  s = responseReducer(s, ev(2, "response.output_text.delta", { delta: "Hello" }));
  s = responseReducer(s, ev(2, "response.output_text.delta", { delta: "Hello" })); // replayed
  s = responseReducer(s, ev(3, "response.output_text.delta", { delta: " world" }));
  assert.equal(s.text, "Hello world");
  assert.equal(s.response?.status, "in_progress");
  s = responseReducer(s, ev(4, "response.output_text.done", { text: "Hello, world" }));
  s = responseReducer(s, ev(5, "response.completed", { response: snapshot("completed") }));
  assert.equal(s.text, "Hello, world");
  assert.equal(s.response?.status, "completed");
  assert.deepEqual(
    s.events.map((e) => [e.seq, e.detail]),
    [
      [0, "queued"],
      [1, "in_progress"],
      [2, "Hello"],
      [3, " world"],
      [4, ""],
      [5, "completed"],
    ],
  );
  // The end never changes, whatever arrives late.
  s = responseReducer(s, { kind: "object", response: snapshot("cancelled") });
  assert.equal(s.response?.status, "completed");
});

test("a finished response's page keeps its text when the stream replays the deltas", () => {
  const done = { ...snapshot("completed"), output: [{ content: [{ type: "output_text", text: "all" }] }] };
  let s = initialResponseState(done);
  s = responseReducer(s, ev(0, "response.created", { response: snapshot("queued") }));
  s = responseReducer(s, ev(1, "response.output_text.delta", { delta: "all" }));
  assert.equal(s.text, "all");
  assert.equal(s.response?.status, "completed");
});
