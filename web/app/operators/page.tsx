"use client";

// Operators: every queue now (GET /v1/queues every two seconds) and over the last hour
// (GET /v1/ops/history: the control process samples the queues every
// MONKEY_OPS_SAMPLE_S; the page asks for the samples newer than those it has): waiting
// jobs per priority, the oldest wait, running jobs and workers, and throughput.

import { useState } from "react";
import Chart from "@/components/Chart";
import ErrorNotice from "@/components/ErrorNotice";
import RequireKey from "@/components/RequireKey";
import { apiJson, isAbort } from "@/lib/api";
import { formatMs } from "@/lib/format";
import { mergeSamples, oldestWait, rollingThroughput } from "@/lib/history";
import { usePoll } from "@/lib/poll";
import { useTitle } from "@/lib/title";
import type { History, ListPage, QueueSample, QueueStat } from "@/lib/types";

const NOW_EVERY_MS = 2000;
const HISTORY_EVERY_MS = 3000;
const HOUR_MS = 3600_000;
// Throughput is averaged over this trailing window of samples.
const RATE_WINDOW_S = 30;

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
  const [now, setNow] = useState<QueueStat[] | null>(null);
  const [samples, setSamples] = useState<QueueSample[]>([]);
  const [sampleS, setSampleS] = useState<number | null>(null);
  const [error, setError] = useState<unknown>(null);

  usePoll(
    async (signal) => {
      try {
        const page = await apiJson<ListPage<QueueStat>>("/v1/queues", { key: apiKey, signal });
        setNow(Array.isArray(page.data) ? page.data : []);
        setError(null);
      } catch (err) {
        if (!isAbort(err)) setError(err);
        throw err;
      }
    },
    NOW_EVERY_MS,
    [apiKey],
  );

  // The history: all of the last hour first, then only what is newer than the last sample.
  usePoll(
    async (signal) => {
      const since = samples.length ? samples[samples.length - 1].at : null;
      const path = since === null ? "/v1/ops/history" : `/v1/ops/history?since=${since}`;
      const page = await apiJson<History>(path, { key: apiKey, signal });
      setSampleS(page.sample_s);
      setSamples((prev) => mergeSamples(prev, page.data ?? [], Date.now() - HOUR_MS));
    },
    HISTORY_EVERY_MS,
    [apiKey, samples.length ? samples[samples.length - 1].at : 0],
  );

  if (!now) return error ? <ErrorNotice error={error} title="Could not load the queues" /> : <p aria-busy="true">Loading queues…</p>;
  return (
    <>
      <ErrorNotice error={error} title="Refresh failed" />
      <QueueTable queues={now} />
      <HistoryNote samples={samples} sampleS={sampleS} />
      {samples.length > 0
        ? now.map((q) => <QueueCharts key={q.queue} queue={q.queue} samples={samples} />)
        : null}
    </>
  );
}

function HistoryNote({ samples, sampleS }: { samples: QueueSample[]; sampleS: number | null }) {
  if (sampleS === 0) {
    return (
      <p className="notice" data-testid="history-off">
        No charts: the control process does not sample the queues (<code>MONKEY_OPS_SAMPLE_S=0</code>).
      </p>
    );
  }
  if (!samples.length) {
    return (
      <p className="notice" data-testid="history-empty">
        No samples yet: the control process samples the queues every {sampleS ?? "few"} s; the charts appear with the
        first one.
      </p>
    );
  }
  return (
    <p className="muted small" data-testid="history-note">
      The last hour: a sample every {sampleS} s, {samples.length} sample{samples.length === 1 ? "" : "s"} since{" "}
      {new Date(samples[0].at * 1000).toLocaleTimeString()}.
    </p>
  );
}

function QueueTable({ queues }: { queues: QueueStat[] }) {
  return (
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
          {queues.map((q) => {
            const oldest = oldestWait(q);
            return (
              <tr key={q.queue} data-testid="queue-row" data-queue={q.queue}>
                <th scope="row" data-label="Queue">
                  <code>{q.queue}</code>
                </th>
                <td data-label="Waiting (interactive)">{q.priorities?.interactive?.depth ?? 0}</td>
                <td data-label="Waiting (batch)">{q.priorities?.batch?.depth ?? 0}</td>
                <td data-label="Oldest wait">{oldest > 0 ? formatMs(oldest * 1000) : "-"}</td>
                <td data-label="Running" data-testid="queue-running">
                  {q.running ?? 0}
                </td>
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
  );
}

function QueueCharts({ queue, samples }: { queue: string; samples: QueueSample[] }) {
  const times = samples.map((s) => s.at * 1000);
  const to = times[times.length - 1];
  const from = Math.min(times[0], to - 30_000); // the samples there are, at least 30 s wide
  const pick = (f: (q: QueueSample["queues"][number]) => number | null) =>
    samples.map((s) => {
      const q = s.queues.find((x) => x.queue === queue);
      return q ? f(q) : null;
    });
  const common = { times, from, to };
  return (
    <section aria-labelledby={`queue-${queue}`} className="queue-charts">
      <h2 id={`queue-${queue}`}>
        Queue <code>{queue}</code>
      </h2>
      <div className="charts">
        <Chart
          {...common}
          title="Waiting jobs"
          testId={`chart-${queue}-depth`}
          series={[
            { label: "interactive", color: "var(--accent)", values: pick((x) => x.priorities?.interactive?.depth ?? 0) },
            { label: "batch", color: "var(--warn)", values: pick((x) => x.priorities?.batch?.depth ?? 0) },
          ]}
        />
        <Chart
          {...common}
          title="Oldest wait"
          unit=" s"
          testId={`chart-${queue}-oldest`}
          series={[{ label: "oldest", color: "var(--danger)", values: pick((x) => oldestWait(x)) }]}
        />
        <Chart
          {...common}
          title="Running jobs and workers"
          testId={`chart-${queue}-running`}
          series={[
            { label: "running", color: "var(--ok)", values: pick((x) => x.running ?? 0) },
            { label: "workers", color: "var(--muted)", values: pick((x) => x.workers ?? 0) },
          ]}
        />
        <Chart
          {...common}
          title={`Throughput (over ${RATE_WINDOW_S} s)`}
          unit="/min"
          testId={`chart-${queue}-throughput`}
          series={[{ label: "finished", color: "var(--tok-title)", values: rollingThroughput(samples, queue, RATE_WINDOW_S) }]}
        />
      </div>
    </section>
  );
}
