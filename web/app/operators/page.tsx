"use client";

// Operators: every queue's depth per priority, oldest wait, running jobs and live
// workers, from GET /v1/queues every two seconds, drawn over the last hour this page has
// been open (the history lives in the page; the API keeps none).

import { useState } from "react";
import Chart from "@/components/Chart";
import ErrorNotice from "@/components/ErrorNotice";
import RequireKey from "@/components/RequireKey";
import { apiJson, isAbort } from "@/lib/api";
import { formatMs } from "@/lib/format";
import { usePoll } from "@/lib/poll";
import { useTitle } from "@/lib/title";
import type { ListPage, QueueStat } from "@/lib/types";

const EVERY_MS = 2000;
const KEEP = 3600_000 / EVERY_MS; // an hour of samples

interface Sample {
  at: number;
  queues: QueueStat[];
}

export default function OperatorsPage() {
  useTitle("Queues and workers");
  return (
    <section aria-labelledby="operators-title">
      <h1 id="operators-title">Queues and workers</h1>
      <RequireKey>{(key) => <Operators apiKey={key} />}</RequireKey>
    </section>
  );
}

function Operators({ apiKey }: { apiKey: string }) {
  const [samples, setSamples] = useState<Sample[]>([]);
  const [error, setError] = useState<unknown>(null);

  usePoll(
    async (signal) => {
      try {
        const page = await apiJson<ListPage<QueueStat>>("/v1/queues", { key: apiKey, signal });
        const sample = { at: Date.now(), queues: Array.isArray(page.data) ? page.data : [] };
        setSamples((prev) => [...prev.slice(-(KEEP - 1)), sample]);
        setError(null);
      } catch (err) {
        if (!isAbort(err)) setError(err);
        throw err;
      }
    },
    EVERY_MS,
    [apiKey],
  );

  const last = samples[samples.length - 1];
  if (!last) return error ? <ErrorNotice error={error} title="Could not load the queues" /> : <p aria-busy="true">Loading queues…</p>;
  const since = samples[0].at;
  const pick = (queue: string, f: (q: QueueStat) => number | null) =>
    samples.map((s) => {
      const q = s.queues.find((x) => x.queue === queue);
      return q ? f(q) : null;
    });
  return (
    <>
      <ErrorNotice error={error} title="Refresh failed" />
      <p className="muted small">
        Every {EVERY_MS / 1000} s since {new Date(since).toLocaleTimeString()} ({samples.length} sample
        {samples.length === 1 ? "" : "s"}; up to an hour is kept while this page stays open).
      </p>
      <div className="table-wrap">
        <table className="jobs" data-testid="queues-table">
          <caption className="visually-hidden">Queues now</caption>
          <thead>
            <tr>
              <th scope="col">Queue</th>
              <th scope="col">Waiting (interactive)</th>
              <th scope="col">Waiting (batch)</th>
              <th scope="col">Oldest wait</th>
              <th scope="col">Running</th>
              <th scope="col">Workers</th>
            </tr>
          </thead>
          <tbody>
            {last.queues.map((q) => {
              const oldest = Math.max(
                ...Object.values(q.priorities ?? {}).map((p) => p.oldest_age_s ?? 0),
              );
              return (
                <tr key={q.queue} data-testid="queue-row" data-queue={q.queue}>
                  <th scope="row" data-label="Queue">
                    <code>{q.queue}</code>
                  </th>
                  <td data-label="Waiting (interactive)">{q.priorities?.interactive?.depth ?? 0}</td>
                  <td data-label="Waiting (batch)">{q.priorities?.batch?.depth ?? 0}</td>
                  <td data-label="Oldest wait">{oldest > 0 ? formatMs(oldest * 1000) : "-"}</td>
                  <td data-label="Running" data-testid="queue-running">{q.running ?? 0}</td>
                  <td data-label="Workers" className={q.workers ? "" : "warn-text"}>
                    {q.workers ?? 0}
                    {q.workers ? "" : " (none: jobs wait)"}
                  </td>
                </tr>
              );
            })}
          </tbody>
        </table>
      </div>
      {last.queues.map((q) => (
        <section key={q.queue} aria-labelledby={`queue-${q.queue}`} className="queue-charts">
          <h2 id={`queue-${q.queue}`}>
            Queue <code>{q.queue}</code>
          </h2>
          <div className="charts">
            <Chart
              title="Waiting jobs"
              testId={`chart-${q.queue}-depth`}
              series={[
                { label: "interactive", color: "var(--accent)", values: pick(q.queue, (x) => x.priorities?.interactive?.depth ?? 0) },
                { label: "batch", color: "var(--warn)", values: pick(q.queue, (x) => x.priorities?.batch?.depth ?? 0) },
              ]}
            />
            <Chart
              title="Running jobs and workers"
              testId={`chart-${q.queue}-running`}
              series={[
                { label: "running", color: "var(--ok)", values: pick(q.queue, (x) => x.running ?? 0) },
                { label: "workers", color: "var(--muted)", values: pick(q.queue, (x) => x.workers ?? 0) },
              ]}
            />
            <Chart
              title="Oldest wait"
              unit=" s"
              testId={`chart-${q.queue}-oldest`}
              series={[
                {
                  label: "oldest",
                  color: "var(--danger)",
                  values: pick(q.queue, (x) => Math.max(0, ...Object.values(x.priorities ?? {}).map((p) => p.oldest_age_s ?? 0))),
                },
              ]}
            />
          </div>
        </section>
      ))}
    </>
  );
}
