// The one door to the HTTP API. Every request carries the key as a bearer token;
// every failure becomes an ApiError whose message comes from the server's
// {"error": {"type", "message"}} body, or says the server could not be reached.

import { readKey } from "./key";

// Empty means same origin: in single-machine mode the API serves this UI at "/".
export const API_BASE = (process.env.NEXT_PUBLIC_API_URL ?? "").replace(/\/+$/, "");

export function apiUrl(path: string): string {
  return API_BASE + path;
}

export function apiOrigin(): string {
  if (API_BASE) return API_BASE;
  return typeof window === "undefined" ? "this site" : window.location.origin;
}

export class ApiError extends Error {
  /** HTTP status, or 0 when no answer came back (network, CORS, server down). */
  readonly status: number;
  readonly type: string;
  readonly retryAfter: number | null;

  constructor(status: number, type: string, message: string, retryAfter: number | null = null) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.type = type;
    this.retryAfter = retryAfter;
  }
}

export function authHeaders(key?: string | null): Record<string, string> {
  const k = key ?? readKey();
  return k ? { Authorization: `Bearer ${k}` } : {};
}

export async function errorFromResponse(res: Response): Promise<ApiError> {
  const retry = res.headers.get("Retry-After");
  const retryAfter = retry && /^\d+$/.test(retry) ? Number(retry) : null;
  let type = `http_${res.status}`;
  let message = `${res.status} ${res.statusText || "error"}`.trim();
  const text = await res.text().catch(() => "");
  try {
    const body = JSON.parse(text) as { error?: { type?: string; message?: string }; detail?: unknown };
    if (body.error && typeof body.error === "object") {
      type = body.error.type || type;
      message = body.error.message || message;
    } else if (typeof body.detail === "string") {
      message = body.detail;
    } else if (body.detail !== undefined) {
      message = JSON.stringify(body.detail);
    }
  } catch {
    if (text && text.length < 300) message = text;
  }
  return new ApiError(res.status, type, message, retryAfter);
}

export function unreachable(cause: unknown): ApiError {
  const detail = cause instanceof Error ? cause.message : String(cause);
  return new ApiError(0, "unreachable", `The service could not be reached (${detail}).`);
}

export interface RequestOptions {
  method?: string;
  json?: unknown;
  form?: FormData;
  key?: string | null;
  signal?: AbortSignal;
  headers?: Record<string, string>;
}

/** Sends a request and returns the raw Response if it is 2xx; throws ApiError otherwise. */
export async function apiFetch(path: string, opts: RequestOptions = {}): Promise<Response> {
  const headers: Record<string, string> = { ...authHeaders(opts.key), ...opts.headers };
  let body: BodyInit | undefined;
  if (opts.json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(opts.json);
  } else if (opts.form) {
    body = opts.form;
  }
  let res: Response;
  try {
    res = await fetch(apiUrl(path), {
      method: opts.method ?? (body ? "POST" : "GET"),
      headers,
      body,
      signal: opts.signal,
      cache: "no-store",
    });
  } catch (err) {
    if (err instanceof DOMException && err.name === "AbortError") throw err;
    throw unreachable(err);
  }
  if (!res.ok) throw await errorFromResponse(res);
  return res;
}

export async function apiJson<T>(path: string, opts: RequestOptions = {}): Promise<T> {
  const res = await apiFetch(path, opts);
  return (await res.json()) as T;
}

export function isAbort(err: unknown): boolean {
  return err instanceof DOMException && err.name === "AbortError";
}
