"use client";

// While a job waits: its place on the queue (GET /v1/jobs/{id}/position), how deep the
// queue is and whether any worker consumes it (GET /v1/queues), and an estimate of the
// wait from how fast its place has moved since the page opened.

import Link from "next/link";
import { useRef, useState } from "react";
import { apiJson } from "@/lib/api";
import { formatMs } from "@/lib/format";
import { usePoll } from "@/lib/poll";
import { aheadRate } from "@/lib/queue";
import type { ListPage, QueueStat } from "@/lib/types";

interface Position {
  queue: string;
  ahead: number | null;
}

export default function QueueInfo({ apiKey, jobId, priority }: { apiKey: string; jobId: string; priority: string }) {
  const [pos, setPos] = useState<Position | null>(null);
  const [stat, setStat] = useState<QueueStat | null>(null);
  const [rate, setRate] = useState<number | null>(null);
  const first = useRef<{ at: number; ahead: number } | null>(null);

  // Queue figures are a nicety: without them (errors are ignored) the page still shows the wait.
  usePoll(
    async (signal) => {
      const p = await apiJson<Position>(`/v1/jobs/${encodeURIComponent(jobId)}/position`, { key: apiKey, signal });
      setPos(p);
      if (p.ahead !== null) {
        const now = Date.now();
        first.current = first.current ?? { at: now, ahead: p.ahead };
        setRate(aheadRate(first.current, p.ahead, now));
      }
      const stats = await apiJson<ListPage<QueueStat>>("/v1/queues", { key: apiKey, signal });
      setStat((stats.data ?? []).find((q) => q.queue === p.queue) ?? null);
    },
    2000,
    [apiKey, jobId],
  );

  if (!pos || !stat) return null;
  const queue = pos.queue;
  const p = stat.priorities?.[priority] ?? {};
  const ahead = pos.ahead;
  return (
    <div className="notice" data-testid="queue-info">
      {ahead !== null ? (
        <p className="queue-position">
          <strong data-testid="queue-position">
            {ahead === 0 ? "Next in line" : `${ahead} job${ahead === 1 ? "" : "s"} ahead of it`}
          </strong>
          {rate ? (
            <span data-testid="queue-eta">
              {" "}
              (about {formatMs(((ahead + 1) / rate) * 1000)} at the pace since this page opened)
            </span>
          ) : null}
        </p>
      ) : null}
      Queue <code>{queue}</code> ({priority}): {p.depth ?? 0} waiting
      {p.oldest_age_s != null ? `, the oldest for ${formatMs(p.oldest_age_s * 1000)}` : ""}; {stat.running ?? 0}{" "}
      running; {stat.workers ?? 0} worker{stat.workers === 1 ? "" : "s"}.{" "}
      <Link href="/operators/">All queues</Link>
      {stat.workers === 0 ? (
        <p className="next-step" data-testid="no-workers">
          No worker consumes this queue, so the job will wait until one starts:{" "}
          <code>monkey worker --queues {queue}</code>.
        </p>
      ) : null}
    </div>
  );
}
