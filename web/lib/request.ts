// The new-job form's state (a Draft, kept as the strings the inputs hold) and the
// request body it becomes; and back again, from a job, for "edit and resubmit".

import type { Job } from "./types";

export const ECHO_MODEL = "debug/echo";

export interface Turn {
  role: "user" | "assistant";
  content: string;
}

export interface Draft {
  model: string;
  kind: string;
  priority: string;
  system: string;
  /** Earlier turns of the conversation, before the prompt. */
  turns: Turn[];
  prompt: string;
  maxTokens: string;
  temperature: string;
  topP: string;
  /** Stop sequences, one per line. */
  stop: string;
  seed: string;
  delayMs: string;
}

export const emptyDraft: Draft = {
  model: "",
  kind: "generate",
  priority: "interactive",
  system: "",
  turns: [],
  prompt: "",
  maxTokens: "256",
  temperature: "0.7",
  topP: "",
  stop: "",
  seed: "",
  delayMs: "",
};

export interface JobRequest {
  kind: string;
  model: string;
  input: Record<string, unknown>;
  params: Record<string, unknown>;
  priority: string;
}

function num(s: string): number | undefined {
  const t = s.trim();
  return t === "" || Number.isNaN(Number(t)) ? undefined : Number(t);
}

/** The POST /v1/jobs body. `accepts` names the parameters the model takes (all if null). */
export function requestFromDraft(d: Draft, accepts: readonly string[] | null = null): JobRequest {
  const ok = (p: string) => accepts === null || accepts.includes(p);
  if (d.kind === "embed") {
    const texts = d.prompt.split("\n").map((t) => t.trim()).filter(Boolean);
    return { kind: "embed", model: d.model, input: { texts }, params: {}, priority: d.priority };
  }
  const turns = d.turns.filter((t) => t.content.trim());
  const input: Record<string, unknown> =
    d.system.trim() || turns.length
      ? {
          messages: [
            ...(d.system.trim() ? [{ role: "system", content: d.system }] : []),
            ...turns,
            { role: "user", content: d.prompt },
          ],
        }
      : { prompt: d.prompt };
  const params: Record<string, unknown> = {};
  const set = (name: string, value: unknown) => {
    if (value !== undefined && ok(name)) params[name] = value;
  };
  set("max_tokens", num(d.maxTokens));
  set("temperature", num(d.temperature));
  set("top_p", num(d.topP));
  const stops = d.stop.split("\n").filter((s) => s !== "");
  set("stop", stops.length ? stops : undefined);
  set("seed", num(d.seed));
  if (d.model === ECHO_MODEL) set("delay_ms", num(d.delayMs));
  return { kind: d.kind, model: d.model, input, params, priority: d.priority };
}

const str = (v: unknown) => (typeof v === "number" || typeof v === "string" ? String(v) : "");

/** A draft that submits the same request as `job` did. */
export function draftFromJob(job: Job): Draft {
  const p = job.params ?? {};
  const input = job.input ?? {};
  let system = "";
  let turns: Turn[] = [];
  let prompt = input.prompt ?? "";
  if (job.kind === "embed") {
    prompt = (input.texts ?? []).join("\n");
  } else if (Array.isArray(input.messages)) {
    const msgs = [...input.messages];
    if (msgs[0]?.role === "system") system = msgs.shift()?.content ?? "";
    const last = msgs[msgs.length - 1];
    if (last?.role === "user") prompt = msgs.pop()?.content ?? "";
    else prompt = "";
    turns = msgs.map((m) => ({ role: m.role === "assistant" ? "assistant" : "user", content: m.content }));
  }
  const stop = Array.isArray(p.stop) ? (p.stop as unknown[]).map(String).join("\n") : str(p.stop);
  return {
    model: job.model,
    kind: job.kind,
    priority: job.priority ?? "interactive",
    system,
    turns,
    prompt,
    maxTokens: str(p.max_tokens),
    temperature: str(p.temperature),
    topP: str(p.top_p),
    stop,
    seed: str(p.seed),
    delayMs: str(p.delay_ms),
  };
}

/** The body that runs `job` again, as it was asked. */
export function requestOfJob(job: Job): JobRequest {
  return {
    kind: job.kind,
    model: job.model,
    input: job.input ?? {},
    params: job.params ?? {},
    priority: job.priority ?? "interactive",
  };
}

// The form's draft survives Back and reloads in this tab (sessionStorage).
const DRAFT_KEY = "monkey.draft";

export function saveDraft(d: Draft): void {
  try {
    window.sessionStorage.setItem(DRAFT_KEY, JSON.stringify(d));
  } catch {
    // Private mode or full storage: the form still works, it just is not kept.
  }
}

export function loadDraft(): Draft | null {
  try {
    const raw = window.sessionStorage.getItem(DRAFT_KEY);
    if (!raw) return null;
    const d = JSON.parse(raw) as Partial<Draft>;
    return { ...emptyDraft, ...d, turns: Array.isArray(d.turns) ? d.turns : [] };
  } catch {
    return null;
  }
}
