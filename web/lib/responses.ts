// The Responses API (/v1/responses) as the response page shows it: a response is a job
// underneath (`resp_X` runs as `job_X`); its typed events (`response.created`,
// `.output_text.delta`, ..., `response.completed`) are read with fetch (EventSource
// cannot send the key), resumed after a drop with `starting_after`, and folded into
// the page's state by `responseReducer`.

import { ApiError, authHeaders, isAbort, unreachable } from "./api";
import { readEventStream, sleep } from "./sse";

export const RESPONSE_TERMINAL: ReadonlySet<string> = new Set(["completed", "incomplete", "failed", "cancelled"]);
const TERMINAL_EVENTS = new Set([...RESPONSE_TERMINAL].map((s) => `response.${s}`));

export function responseIdOf(jobId: string): string {
  return jobId.startsWith("job_") ? `resp_${jobId.slice(4)}` : jobId;
}

export function jobIdOf(responseId: string): string {
  return responseId.startsWith("resp_") ? `job_${responseId.slice(5)}` : responseId;
}

export interface ResponseObject {
  id: string;
  status: string;
  model: string;
  created_at?: number;
  background?: boolean;
  instructions?: string | null;
  previous_response_id?: string | null;
  output?: { content?: { type: string; text?: string }[] }[];
  error?: { code?: string; message?: string } | null;
  usage?: { input_tokens?: number; output_tokens?: number };
}

export interface InputItem {
  id: string;
  role: string;
  content?: { type: string; text?: string }[];
}

export interface ResponseEvent {
  type: string;
  sequence_number: number;
  delta?: string;
  text?: string;
  response?: ResponseObject;
}

export interface ResponseState {
  response: ResponseObject | null;
  text: string;
  /** The events seen, oldest first (the last MAX_EVENTS). */
  events: { seq: number; type: string; detail: string }[];
  lastSeq: number;
  /** Events seen in all (the list keeps only the last MAX_EVENTS). */
  count: number;
}

export const MAX_EVENTS = 300;

export function initialResponseState(response: ResponseObject | null): ResponseState {
  return { response, text: outputText(response), events: [], lastSeq: -1, count: 0 };
}

export function outputText(r: ResponseObject | null): string {
  return (r?.output ?? []).flatMap((item) => item.content ?? []).map((c) => c.text ?? "").join("");
}

export function isOver(status: string | undefined): boolean {
  return status !== undefined && RESPONSE_TERMINAL.has(status);
}

/** A fresh read of the response (GET /v1/responses/{id}, or the answer to its cancel). */
export type ResponseAction = { kind: "event"; event: ResponseEvent } | { kind: "object"; response: ResponseObject };

export function responseReducer(state: ResponseState, action: ResponseAction): ResponseState {
  if (action.kind === "object") {
    const r = action.response;
    if (isOver(state.response?.status)) return state; // the end never changes
    return { ...state, response: r, text: isOver(r.status) && outputText(r) ? outputText(r) : state.text };
  }
  const ev = action.event;
  if (ev.sequence_number <= state.lastSeq) return state; // seen before a reconnect
  const next: ResponseState = { ...state, lastSeq: ev.sequence_number, count: state.count + 1 };
  let detail = "";
  if (ev.type === "response.output_text.delta" && ev.delta) {
    // A finished response's page opened on its text; its replayed deltas are listed only.
    if (!isOver(state.response?.status)) next.text = state.text + ev.delta;
    detail = ev.delta;
  } else if (ev.type === "response.output_text.done" && typeof ev.text === "string") {
    next.text = ev.text; // the text that counts (after a retry, it may differ)
  }
  if (ev.response && !isOver(state.response?.status)) {
    next.response = ev.response;
    detail = ev.response.status;
  }
  next.events = [...state.events, { seq: ev.sequence_number, type: ev.type, detail }].slice(-MAX_EVENTS);
  return next;
}

export interface ResponseStreamHandlers {
  onEvent(ev: ResponseEvent): void;
  onMode(mode: "live" | "reconnecting" | "closed", err?: ApiError): void;
  /** 401, 404: following stops. */
  onFatal(err: ApiError): void;
}

/** Follows a response's events after `after` until its terminal event; returns a stop function. */
export function followResponse(id: string, after: number, handlers: ResponseStreamHandlers, key: string | null): () => void {
  const controller = new AbortController();
  const { signal } = controller;
  let last = after;

  async function once(): Promise<boolean> {
    return readEventStream(`/v1/responses/${encodeURIComponent(id)}?stream=true&starting_after=${last}`, {
      headers: authHeaders(key),
      signal,
      onOpen: () => handlers.onMode("live"),
      onEvent: (raw) => {
        let ev: ResponseEvent;
        try {
          ev = JSON.parse(raw.data) as ResponseEvent;
        } catch {
          return false;
        }
        if (typeof ev.sequence_number === "number") last = Math.max(last, ev.sequence_number);
        handlers.onEvent(ev);
        return TERMINAL_EVENTS.has(ev.type);
      },
    });
  }

  async function run(): Promise<void> {
    let failures = 0;
    while (!signal.aborted) {
      try {
        if (await once()) {
          handlers.onMode("closed");
          return;
        }
        failures = 0;
        handlers.onMode("reconnecting");
      } catch (err) {
        if (isAbort(err) || signal.aborted) return;
        const apiErr = err instanceof ApiError ? err : unreachable(err);
        if ([401, 403, 404].includes(apiErr.status)) {
          handlers.onFatal(apiErr);
          return;
        }
        failures += 1;
        handlers.onMode("reconnecting", apiErr);
      }
      await sleep(Math.min(500 * 2 ** failures, 5000), signal);
    }
  }

  void run();
  return () => controller.abort();
}
