// Webhook endpoints (/v1/webhook_endpoints): a key's subscriptions of a URL to event
// types, each signed with its own secret, and their delivery log.

export const ENDPOINT_EVENTS: { group: string; events: string[] }[] = [
  { group: "Jobs", events: ["job.succeeded", "job.failed", "job.cancelled", "job.expired"] },
  {
    group: "Responses",
    events: ["response.completed", "response.failed", "response.cancelled", "response.incomplete"],
  },
  { group: "Batches", events: ["batch.completed", "batch.failed", "batch.cancelled", "batch.expired"] },
];

export interface Endpoint {
  id: string;
  url: string;
  events: string[];
  status: string;
  disabled_reason?: string | null;
  created_at: number;
  /** Only in the answer that made or rotated it. */
  secret?: string | null;
}

export interface DeliveryAttempt {
  at: string;
  status_code: number | null;
  error: string | null;
  duration_ms: number;
}

export interface Delivery {
  id: string;
  type: string;
  url: string;
  status: string;
  attempts: number;
  last_status_code: number | null;
  last_error: string | null;
  next_attempt_at: number | null;
  created_at: number | null;
  delivered_at: number | null;
  log: DeliveryAttempt[];
}

/** When a delivery was last tried (ms), from its log; null before its first attempt. */
export function lastAttemptAt(d: Delivery): number | null {
  const at = d.log.length ? Date.parse(d.log[d.log.length - 1].at) : NaN;
  return Number.isNaN(at) ? null : at;
}
