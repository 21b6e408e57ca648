// The new-job form's draft and the request it becomes, and back (edit and resubmit).

import assert from "node:assert/strict";
import { test } from "node:test";
import { datedHistory, initialJobState, jobReducer } from "../lib/jobState";
import { draftFromJob, emptyDraft, requestFromDraft } from "../lib/request";

test("a plain prompt stays a prompt; a system message or earlier turns make messages", () => {
  const d = { ...emptyDraft, model: "debug/echo", prompt: "hi", topP: "0.9", stop: "END\n\n", seed: "7" };
  assert.deepEqual(requestFromDraft(d).input, { prompt: "hi" });
  assert.deepEqual(requestFromDraft(d).params, { max_tokens: 256, temperature: 0.7, top_p: 0.9, stop: ["END"], seed: 7 });
  const chat = requestFromDraft({ ...d, system: "be brief", turns: [{ role: "user", content: "a" }, { role: "assistant", content: "b" }] });
  assert.deepEqual(chat.input, {
    messages: [
      { role: "system", content: "be brief" },
      { role: "user", content: "a" },
      { role: "assistant", content: "b" },
      { role: "user", content: "hi" },
    ],
  });
});

test("only the parameters the model reads are sent", () => {
  const d = { ...emptyDraft, model: "debug/echo", prompt: "hi", delayMs: "50", seed: "3" };
  assert.deepEqual(requestFromDraft(d, ["max_tokens", "stop", "delay_ms"]).params, { max_tokens: 256, delay_ms: 50 });
});

test("a job's draft submits the same request again", () => {
  const d = { ...emptyDraft, model: "debug/echo", prompt: "hi", system: "sys", turns: [{ role: "assistant" as const, content: "x" }], stop: "a\nb", seed: "1", delayMs: "5" };
  const req = requestFromDraft(d);
  const job = { id: "job_1", kind: "generate", model: req.model, status: "succeeded", input: req.input as never, params: req.params, priority: "batch" };
  assert.deepEqual(requestFromDraft(draftFromJob(job)), { ...req, priority: "batch" });
});

test("status history uses the job's own times, not when the page saw them", () => {
  const job = {
    id: "job_1", kind: "generate", model: "debug/echo", status: "succeeded",
    created_at: "2026-01-01T12:00:00Z", started_at: "2026-01-01T12:00:01Z", finished_at: "2026-01-01T12:00:05Z",
  };
  const s = jobReducer(initialJobState, { type: "loaded", job, now: Date.parse("2026-01-01T13:00:00Z") });
  assert.deepEqual(datedHistory(s), [
    { status: "queued", at: Date.parse("2026-01-01T12:00:00Z") },
    { status: "running", at: Date.parse("2026-01-01T12:00:01Z") },
    { status: "succeeded", at: Date.parse("2026-01-01T12:00:05Z") },
  ]);
});
