// The job page's state, as a reducer over what arrives: the first GET, stream
// events, polled envelopes and the cancel answer. It keeps the two rules of the
// job model: terminal states never change, and `cancelling` only ends in one.

import { toMillis } from "./format";
import { isTerminal, type ApiErrorBody, type Job } from "./types";

export interface StatusStep {
  status: string;
  at: number;
}

export interface JobState {
  job: Job | null;
  status: string | null;
  history: StatusStep[];
  text: string;
  tokens: number;
  restarts: number;
  /** Client clock when the job was first seen running, for a live run time. */
  runningSince: number | null;
  /** Times of the first and latest token (server clock for streamed events), for live rates. */
  firstTokenAt: number | null;
  lastTokenAt: number | null;
  lastErrorEvent: ApiErrorBody | null;
  progress: Record<string, unknown> | null;
}

export const initialJobState: JobState = {
  job: null,
  status: null,
  history: [],
  text: "",
  tokens: 0,
  restarts: 0,
  runningSince: null,
  firstTokenAt: null,
  lastTokenAt: null,
  lastErrorEvent: null,
  progress: null,
};

export type JobAction =
  | { type: "loaded"; job: Job; now: number }
  | { type: "event"; event: string; data: string; id?: string; now: number }
  | { type: "envelope"; job: Job; now: number };

function canMove(from: string | null, to: string): boolean {
  if (from === null || from === to) return true;
  if (isTerminal(from)) return false;
  if (from === "cancelling") return isTerminal(to);
  return true;
}

function withStatus(state: JobState, status: unknown, now: number): JobState {
  if (typeof status !== "string" || !canMove(state.status, status)) return state;
  const last = state.history[state.history.length - 1];
  const history = last?.status === status ? state.history : [...state.history, { status, at: now }];
  const runningSince = status === "running" && state.runningSince === null ? now : state.runningSince;
  return { ...state, status, history, runningSince };
}

function withEnvelope(state: JobState, job: Job, now: number): JobState {
  if (!job || typeof job !== "object" || typeof job.id !== "string") return state;
  // A stale envelope (an earlier status than we know) must not roll the page back.
  if (!canMove(state.status, job.status)) return state;
  const next = withStatus({ ...state, job }, job.status, now);
  const text = job.output?.text;
  return typeof text === "string" && (isTerminal(job.status) || text.length >= next.text.length)
    ? { ...next, text }
    : next;
}

function parse(data: string): Record<string, unknown> | null {
  try {
    const v: unknown = JSON.parse(data);
    return v && typeof v === "object" ? (v as Record<string, unknown>) : null;
  } catch {
    return null;
  }
}

function onEvent(state: JobState, event: string, raw: string, now: number): JobState {
  const data = parse(raw);
  switch (event) {
    case "status": {
      if (!data) return state;
      let next = state;
      if (data.restarted === true) {
        // The provider call was retried: what streamed so far is void.
        next = { ...next, text: "", tokens: 0, restarts: next.restarts + 1, firstTokenAt: null, lastTokenAt: null };
      }
      return withStatus(next, data.status, now);
    }
    case "token": {
      if (!data || typeof data.text !== "string") return state;
      let tokens = state.tokens + 1;
      if (typeof data.count === "number") tokens = state.tokens + data.count;
      else if (typeof data.index === "number") tokens = Math.max(tokens, data.index + 1);
      // A token means the job runs, even if its status event was missed.
      const next = state.status === "queued" || state.status === null ? withStatus(state, "running", now) : state;
      return {
        ...next,
        text: next.text + data.text,
        tokens,
        firstTokenAt: next.firstTokenAt ?? now,
        lastTokenAt: now,
      };
    }
    case "progress":
      return data ? { ...state, progress: data } : state;
    case "error": {
      const err = (data?.error && typeof data.error === "object" ? data.error : data) as ApiErrorBody | null;
      return { ...state, lastErrorEvent: err ?? { message: raw } };
    }
    case "done":
      return data ? withEnvelope(state, data as unknown as Job, now) : state;
    default:
      return state;
  }
}

// Redis stream ids start with the server's clock in ms: the true time of a replayed event.
function eventTime(id: string | undefined): number | null {
  const m = id ? /^(\d{12,})-\d+$/.exec(id) : null;
  return m ? Number(m[1]) : null;
}

export function jobReducer(state: JobState, action: JobAction): JobState {
  switch (action.type) {
    case "loaded":
      return withEnvelope(state, action.job, action.now);
    case "envelope":
      return withEnvelope(state, action.job, action.now);
    case "event":
      return onEvent(state, action.event, action.data, eventTime(action.id) ?? action.now);
  }
}

/**
 * The status history to show: the job's own times (created_at, started_at,
 * finished_at) for the steps they date, and for the others (cancelling) the time the
 * stream's event carried. Reopening a finished job shows when things happened, not
 * when the page saw them.
 */
export function datedHistory(state: JobState): StatusStep[] {
  const job = state.job;
  if (!job) return state.history;
  const status = state.status ?? job.status;
  const created = toMillis(job.created_at);
  const started = toMillis(job.started_at);
  const finished = toMillis(job.finished_at);
  const seen = new Map(state.history.map((h) => [h.status, h.at]));
  const steps: StatusStep[] = [];
  const add = (s: string, at: number | null | undefined) => {
    if (at !== null && at !== undefined) steps.push({ status: s, at });
  };
  add("queued", created ?? seen.get("queued"));
  if (started !== null || seen.has("running")) add("running", started ?? seen.get("running"));
  if (seen.has("cancelling")) add("cancelling", seen.get("cancelling"));
  if (isTerminal(status)) add(status, finished ?? seen.get(status));
  else if (status !== "queued" && status !== "running" && status !== "cancelling") add(status, seen.get(status));
  return steps;
}
