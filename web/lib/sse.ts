// Server-sent events over fetch. EventSource cannot send an Authorization header,
// so this reads the response body itself, parses the text/event-stream format,
// reconnects with Last-Event-ID after a drop (the server replays from there), and
// falls back to polling GET /v1/jobs/{id} once a second if the stream keeps failing.

import { ApiError, apiJson, apiUrl, authHeaders, errorFromResponse, isAbort, unreachable } from "./api";
import { isTerminal, type Job } from "./types";

export interface SseEvent {
  /** The id this event carried in its own `id:` line, if any. */
  id?: string;
  event: string;
  data: string;
}

/** An incremental text/event-stream parser (the WHATWG algorithm, minus EventSource). */
export class SseParser {
  private buffer = "";
  private data: string[] = [];
  private eventType = "";
  private id: string | undefined;
  /** The latest `retry:` value, in ms: it applies at once, even in a block without data. */
  retry: number | undefined;

  feed(chunk: string): SseEvent[] {
    this.buffer += chunk;
    const out: SseEvent[] = [];
    for (;;) {
      const m = /\r\n|\r|\n/.exec(this.buffer);
      if (!m) break;
      // A lone \r at the end may be the first half of \r\n: wait for more text.
      if (m[0] === "\r" && m.index === this.buffer.length - 1) break;
      const line = this.buffer.slice(0, m.index);
      this.buffer = this.buffer.slice(m.index + m[0].length);
      const ev = this.line(line);
      if (ev) out.push(ev);
    }
    return out;
  }

  private line(line: string): SseEvent | null {
    if (line === "") return this.dispatch();
    if (line.startsWith(":")) return null; // a comment, e.g. a keep-alive
    const colon = line.indexOf(":");
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    switch (field) {
      case "data":
        this.data.push(value);
        break;
      case "event":
        this.eventType = value;
        break;
      case "id":
        if (!value.includes("\0")) this.id = value;
        break;
      case "retry":
        if (/^\d+$/.test(value)) this.retry = Number(value);
        break;
      default:
        break; // unknown fields are ignored, as the spec says
    }
    return null;
  }

  private dispatch(): SseEvent | null {
    const type = this.eventType || "message";
    const hasData = this.data.length > 0;
    const ev: SseEvent = { event: type, data: this.data.join("\n"), id: this.id };
    this.data = [];
    this.eventType = "";
    this.id = undefined;
    return hasData ? ev : null;
  }
}

export type StreamMode = "connecting" | "live" | "reconnecting" | "polling" | "closed";

export interface FollowHandlers {
  /** Every event from the stream, in order, without duplicates across reconnects. */
  onEvent(ev: SseEvent): void;
  /** The envelope, when polling instead of streaming. */
  onPoll(job: Job): void;
  onMode(mode: StreamMode, detail?: ApiError): void;
  /** A failure that retrying will not fix (401, 404): following stops. */
  onFatal(err: ApiError): void;
}

export interface FollowOptions {
  key: string | null;
  /** Consecutive connections without a single event before polling instead. */
  maxFailures?: number;
  pollMs?: number;
  /** While polling, try the stream again after this many polls. */
  pollsBeforeRetry?: number;
  /** Wait before the first reconnect, doubled for each further failure; the server's `retry:` replaces it. */
  retryMs?: number;
}

/** Waits `ms`, or less when `signal` aborts. */
export const sleep = (ms: number, signal: AbortSignal) =>
  new Promise<void>((resolve) => {
    const t = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => {
      clearTimeout(t);
      resolve();
    });
  });

export interface StreamRead {
  headers: Record<string, string>;
  signal: AbortSignal;
  /** The server answered 2xx with a body: the stream is open. */
  onOpen(): void;
  /** Each event in order; returning true ends the read (the stream's last event). */
  onEvent(ev: SseEvent): boolean;
  /** The server's `retry:` value, whenever a chunk carried one. */
  onRetry?(ms: number): void;
}

/**
 * GETs `path` as text/event-stream and reads it: resolves true when `onEvent` said the
 * last event came, false when the server ended the stream first. Throws ApiError for a
 * refusal (its status), for no answer or a connection broken mid-stream (status 0),
 * and the AbortError when `signal` aborts.
 */
export async function readEventStream(path: string, read: StreamRead): Promise<boolean> {
  let res: Response;
  try {
    res = await fetch(apiUrl(path), {
      headers: { Accept: "text/event-stream", ...read.headers },
      signal: read.signal,
      cache: "no-store",
    });
  } catch (err) {
    if (isAbort(err)) throw err;
    throw unreachable(err);
  }
  if (!res.ok) throw await errorFromResponse(res);
  if (!res.body) throw new ApiError(res.status, "no_stream", "The server sent no event stream.");
  read.onOpen();
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  const parser = new SseParser();
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return false;
      const events = parser.feed(value);
      if (parser.retry !== undefined) read.onRetry?.(parser.retry);
      for (const ev of events) if (read.onEvent(ev)) return true;
    }
  } catch (err) {
    if (isAbort(err) || err instanceof ApiError) throw err;
    throw unreachable(err); // the connection broke mid-stream
  } finally {
    reader.cancel().catch(() => undefined);
  }
}

// Redis stream ids ("<ms>-<seq>") are ordered; anything else is compared as unknown.
function streamIdAfter(id: string, last: string): boolean | null {
  const a = /^(\d+)-(\d+)$/.exec(id);
  const b = /^(\d+)-(\d+)$/.exec(last);
  if (!a || !b) return null;
  const [am, as, bm, bs] = [a[1], a[2], b[1], b[2]].map(BigInt);
  return am > bm || (am === bm && as > bs);
}

function isFatal(err: ApiError): boolean {
  return err.status === 401 || err.status === 403 || err.status === 404;
}

/** Follows a job's events until `done`; returns a function that stops following. */
export function followJob(jobId: string, handlers: FollowHandlers, opts: FollowOptions): () => void {
  const controller = new AbortController();
  const { signal } = controller;
  const maxFailures = opts.maxFailures ?? 3;
  const pollMs = opts.pollMs ?? 1000;
  const pollsBeforeRetry = opts.pollsBeforeRetry ?? 10;
  const path = `/v1/jobs/${encodeURIComponent(jobId)}`;
  let lastId: string | undefined;
  let retryMs = opts.retryMs ?? 1000;

  let eventsThisConnection = 0;

  // Resolves true when `done` arrived, false when the stream ended without it.
  async function streamOnce(): Promise<boolean> {
    eventsThisConnection = 0;
    const headers: Record<string, string> = { ...authHeaders(opts.key) };
    if (lastId !== undefined) headers["Last-Event-ID"] = lastId;
    return readEventStream(`${path}/events`, {
      headers,
      signal,
      onOpen: () => handlers.onMode("live"),
      onRetry: (ms) => {
        retryMs = ms;
      },
      onEvent: (ev) => {
        if (ev.id !== undefined && lastId !== undefined && streamIdAfter(ev.id, lastId) === false) {
          return false; // already seen before a reconnect
        }
        if (ev.id !== undefined) lastId = ev.id;
        eventsThisConnection += 1;
        handlers.onEvent(ev);
        return ev.event === "done";
      },
    });
  }

  // Polls until the job is over ("over"), or until it is time to try the stream
  // again ("retry"): after `pollsBeforeRetry` polls, or as soon as the API answers
  // again after being unreachable (it restarted: its stream is likely back too).
  async function poll(): Promise<"over" | "retry"> {
    handlers.onMode("polling");
    let wasDown = false;
    for (let i = 0; i < pollsBeforeRetry && !signal.aborted; i++) {
      try {
        const job = await apiJson<Job>(path, { key: opts.key, signal });
        handlers.onPoll(job);
        if (isTerminal(job.status)) return "over";
        if (wasDown) return "retry";
        handlers.onMode("polling");
      } catch (err) {
        if (isAbort(err)) return "over";
        const apiErr = err instanceof ApiError ? err : unreachable(err);
        if (isFatal(apiErr)) {
          handlers.onFatal(apiErr);
          return "over";
        }
        wasDown ||= apiErr.status === 0;
        handlers.onMode("polling", apiErr);
      }
      await sleep(pollMs, signal);
    }
    return "retry";
  }

  async function run(): Promise<void> {
    let failures = 0;
    handlers.onMode("connecting");
    while (!signal.aborted) {
      let lastError: ApiError | undefined;
      try {
        if (await streamOnce()) {
          handlers.onMode("closed");
          return;
        }
      } catch (err) {
        if (isAbort(err) || signal.aborted) return;
        lastError = err instanceof ApiError ? err : unreachable(err);
        if (isFatal(lastError)) {
          handlers.onFatal(lastError);
          return;
        }
      }
      // A connection that delivered events was working: count from one again.
      failures = eventsThisConnection > 0 ? 1 : failures + 1;
      if (failures >= maxFailures) {
        if ((await poll()) === "over") {
          if (!signal.aborted) handlers.onMode("closed");
          return;
        }
        failures = maxFailures - 1; // one more try at the stream, then back to polling
        continue;
      }
      handlers.onMode("reconnecting", lastError);
      await sleep(Math.min(retryMs * 2 ** (failures - 1), 5000), signal);
    }
  }

  void run();
  return () => controller.abort();
}
