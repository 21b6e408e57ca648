// The job page's reducer: restarts, terminal states, and stale envelopes.

import assert from "node:assert/strict";
import { test } from "node:test";
import { initialJobState, jobReducer, type JobAction, type JobState } from "../lib/jobState";

const job = { id: "job_1", kind: "generate", model: "debug/echo", status: "queued" };
const run = (actions: JobAction[], from: JobState = initialJobState) => actions.reduce(jobReducer, from);
const ev = (event: string, data: unknown, now = 0, id?: string): JobAction => ({
  type: "event",
  event,
  data: JSON.stringify(data),
  id,
  now,
});

test("tokens append; a restarted status drops the text so far", () => {
  const s = run([
    { type: "loaded", job, now: 1 },
    ev("status", { status: "running" }, 2),
    ev("token", { text: "he", index: 0 }),
    ev("status", { status: "running", restarted: true }),
    ev("token", { text: "hello ", index: 0 }),
    ev("token", { text: "wor", index: 1 }),
  ]);
  assert.equal(s.text, "hello wor");
  assert.equal(s.tokens, 2);
  assert.equal(s.restarts, 1);
  assert.deepEqual(s.history.map((h) => h.status), ["queued", "running"]);
});

test("cancelling only ends in a terminal state, and terminal states never change", () => {
  const s = run([
    { type: "loaded", job: { ...job, status: "running" }, now: 1 },
    { type: "envelope", job: { ...job, status: "cancelling" }, now: 2 },
    { type: "envelope", job: { ...job, status: "running" }, now: 3 },
    ev("done", { ...job, status: "cancelled", output: { text: "partial", finish_reason: "cancelled" } }, 4),
    { type: "envelope", job: { ...job, status: "succeeded" }, now: 5 },
  ]);
  assert.equal(s.status, "cancelled");
  assert.equal(s.text, "partial");
  assert.deepEqual(s.history.map((h) => h.status), ["running", "cancelling", "cancelled"]);
});

test("a replayed event is dated by its stream id", () => {
  const s = run([ev("status", { status: "running" }, 99, "1700000000123-0")]);
  assert.equal(s.history[0].at, 1700000000123);
});
