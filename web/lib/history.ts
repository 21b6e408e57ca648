// The operators' history (GET /v1/ops/history) as the page keeps it.

import type { QueueSample, QueueStat } from "./types";

/** The samples so far plus newly fetched ones: by time, each once, none before `cutoffMs`. */
export function mergeSamples(prev: QueueSample[], fresh: QueueSample[], cutoffMs: number): QueueSample[] {
  const byAt = new Map<number, QueueSample>();
  for (const s of [...prev, ...fresh]) byAt.set(s.at, s);
  return [...byAt.values()].filter((s) => s.at * 1000 >= cutoffMs).sort((a, b) => a.at - b.at);
}

/** The longest wait of a queue's priorities, in seconds (0 when nothing waits). */
export function oldestWait(q: QueueStat): number {
  return Math.max(0, ...Object.values(q.priorities ?? {}).map((p) => p.oldest_age_s ?? 0));
}

/** Jobs finished per minute over a sample's interval; null when it cannot be told. */
export function throughputPerMin(finished: number | undefined, intervalS: number): number | null {
  if (finished === undefined || !(intervalS > 0)) return null;
  return (finished / intervalS) * 60;
}

/**
 * A queue's throughput at each sample, in jobs per minute over the samples of the
 * `windowS` seconds up to it: one interval alone is spiky (a batch's lines finish in
 * chunks), a trailing window reads as a rate.
 */
export function rollingThroughput(samples: QueueSample[], queue: string, windowS: number): (number | null)[] {
  return samples.map((s, i) => {
    let finished = 0;
    let seconds = 0;
    for (let j = i; j >= 0 && samples[j].at > s.at - windowS; j--) {
      const q = samples[j].queues.find((x) => x.queue === queue);
      if (q?.finished === undefined) continue;
      finished += q.finished;
      seconds += samples[j].interval_s;
    }
    return throughputPerMin(finished, seconds);
  });
}
