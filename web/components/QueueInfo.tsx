"use client";

// While a job waits: how deep its queue is and whether any worker consumes it.
// The queue comes from the model's entry in GET /v1/models; depths from GET /v1/queues.

import { useEffect, useState } from "react";
import { apiJson, isAbort } from "@/lib/api";
import { formatMs } from "@/lib/format";
import type { ListPage, Model } from "@/lib/types";

interface QueueStat {
  queue: string;
  running?: number;
  workers?: number;
  priorities?: Record<string, { depth?: number; oldest_age_s?: number | null }>;
}

function queueOf(models: (Model & { queue?: string })[], model: string): string | null {
  const exact = models.find((m) => m.id === model);
  const provider = models.find((m) => m.id === `${model.split("/")[0]}/*`);
  return exact?.queue ?? provider?.queue ?? null;
}

export default function QueueInfo({ apiKey, model, priority }: { apiKey: string; model: string; priority: string }) {
  const [queue, setQueue] = useState<string | null>(null);
  const [stat, setStat] = useState<QueueStat | null>(null);

  useEffect(() => {
    const controller = new AbortController();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const tick = async () => {
      try {
        const models = await apiJson<ListPage<Model & { queue?: string }>>("/v1/models", {
          key: apiKey,
          signal: controller.signal,
        });
        const name = queueOf(models.data ?? [], model);
        setQueue(name);
        if (!name) return;
        const stats = await apiJson<ListPage<QueueStat>>("/v1/queues", { key: apiKey, signal: controller.signal });
        setStat((stats.data ?? []).find((q) => q.queue === name) ?? null);
      } catch (err) {
        if (isAbort(err)) return;
        // Queue figures are a nicety: without them the page still shows the wait.
      }
      timer = setTimeout(tick, 2000);
    };
    void tick();
    return () => {
      controller.abort();
      clearTimeout(timer);
    };
  }, [apiKey, model]);

  if (!queue || !stat) return null;
  const p = stat.priorities?.[priority] ?? {};
  return (
    <div className="notice" data-testid="queue-info">
      Queue <code>{queue}</code> ({priority}): {p.depth ?? 0} waiting
      {p.oldest_age_s != null ? `, the oldest for ${formatMs(p.oldest_age_s * 1000)}` : ""}; {stat.running ?? 0}{" "}
      running; {stat.workers ?? 0} worker{stat.workers === 1 ? "" : "s"}.
      {stat.workers === 0 ? (
        <p className="next-step" data-testid="no-workers">
          No worker consumes this queue, so the job will wait until one starts:{" "}
          <code>monkey worker --queues {queue}</code>.
        </p>
      ) : null}
    </div>
  );
}
