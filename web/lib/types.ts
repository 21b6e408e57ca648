// The shapes of the HTTP API (docs/architecture.md, "The job"). Fields the UI does
// not need are left out; everything is read defensively because the server may add
// fields or omit optional ones.

export const JOB_STATUSES = [
  "queued",
  "running",
  "cancelling",
  "succeeded",
  "failed",
  "cancelled",
  "expired",
] as const;

export type JobStatus = (typeof JOB_STATUSES)[number];

export const TERMINAL_STATUSES: ReadonlySet<string> = new Set([
  "succeeded",
  "failed",
  "cancelled",
  "expired",
]);

export function isTerminal(status: string | undefined | null): boolean {
  return status != null && TERMINAL_STATUSES.has(status);
}

export type Priority = "interactive" | "batch";

export interface ApiErrorBody {
  type?: string;
  message?: string;
}

export interface JobMetrics {
  queue_ms?: number | null;
  run_ms?: number | null;
  ttft_ms?: number | null;
  prompt_tokens?: number | null;
  completion_tokens?: number | null;
  tokens_per_s?: number | null;
}

export interface JobOutput {
  text?: string;
  finish_reason?: string | null;
  usage?: { prompt_tokens?: number; completion_tokens?: number; total_tokens?: number };
  embeddings?: number[][];
  dim?: number;
}

export type Timestamp = string | number | null | undefined;

export interface Job {
  id: string;
  object?: "job";
  kind: string;
  model: string;
  status: string;
  priority?: string;
  input?: { prompt?: string; messages?: { role: string; content: string }[]; texts?: string[] };
  params?: Record<string, unknown>;
  output?: JobOutput | null;
  error?: ApiErrorBody | null;
  attempts?: number;
  created_at?: Timestamp;
  started_at?: Timestamp;
  finished_at?: Timestamp;
  metadata?: Record<string, unknown> | null;
  metrics?: JobMetrics | null;
  queue?: string;
  /** The batch this job is a line of, if any. */
  batch_id?: string | null;
}

export interface ListPage<T> {
  object: "list";
  data: T[];
  has_more?: boolean;
  first_id?: string | null;
  last_id?: string | null;
}

export interface Model {
  id: string;
  object?: string;
  kinds?: string[];
  configured?: boolean;
  /** Why a model is not configured, and how to configure it. */
  hint?: string;
  description?: string;
  /** The request parameters it reads. */
  params?: string[];
  queue?: string;
  /** Ids of the live workers that have it loaded (local models). */
  loaded_on?: string[];
}

export interface QueueStat {
  queue: string;
  running?: number;
  workers?: number;
  priorities?: Record<string, { depth?: number; oldest_age_s?: number | null }>;
}

/** A sample of GET /v1/ops/history: GET /v1/queues's figures, and the jobs finished
 * per queue since the sample before it (`interval_s` seconds). */
export interface QueueSample {
  at: number;
  interval_s: number;
  queues: (QueueStat & { finished?: number })[];
}

export interface History {
  object: "list";
  sample_s: number;
  data: QueueSample[];
}

export interface FileObject {
  id: string;
  filename?: string;
  bytes?: number;
  purpose?: string;
}

export interface Batch {
  id: string;
  object?: "batch";
  endpoint?: string;
  status: string;
  input_file_id?: string;
  output_file_id?: string | null;
  error_file_id?: string | null;
  created_at?: Timestamp;
  in_progress_at?: Timestamp;
  completed_at?: Timestamp;
  failed_at?: Timestamp;
  cancelled_at?: Timestamp;
  expired_at?: Timestamp;
  request_counts?: { total?: number; completed?: number; failed?: number } | null;
  errors?: { data?: { code?: string; message?: string; line?: number | null }[] } | null;
}

// OpenAI's batch statuses after which nothing changes.
export const BATCH_TERMINAL: ReadonlySet<string> = new Set([
  "completed",
  "failed",
  "expired",
  "cancelled",
]);
