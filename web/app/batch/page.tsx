"use client";

// One batch: its status, a progress bar from request_counts, and downloads of the
// output and error files. Refreshed every two seconds until it is over.

import Link from "next/link";
import { useSearchParams } from "next/navigation";
import { Suspense, useEffect, useState } from "react";
import ErrorNotice from "@/components/ErrorNotice";
import RequireKey from "@/components/RequireKey";
import StatusBadge from "@/components/StatusBadge";
import { ApiError, apiJson, isAbort } from "@/lib/api";
import { downloadFile } from "@/lib/batches";
import { formatMs, formatTime, toMillis } from "@/lib/format";
import { usePoll } from "@/lib/poll";
import { useTitle } from "@/lib/title";
import { BATCH_TERMINAL, type Batch, type Job, type ListPage } from "@/lib/types";

export default function BatchPage() {
  return (
    <Suspense fallback={<p aria-busy="true">Loading…</p>}>
      <BatchFromQuery />
    </Suspense>
  );
}

function BatchFromQuery() {
  const id = useSearchParams().get("id");
  if (!id) {
    return (
      <div className="notice" role="status">
        No batch id in the address. Open one from <Link href="/batches/">the batches page</Link>.
      </div>
    );
  }
  return <RequireKey>{(key) => <BatchView key={id} id={id} apiKey={key} />}</RequireKey>;
}

function BatchView({ id, apiKey }: { id: string; apiKey: string }) {
  const [batch, setBatch] = useState<Batch | null>(null);
  useTitle(`Batch ${id}${batch ? ` (${batch.status})` : ""}`);
  const [error, setError] = useState<unknown>(null);

  useEffect(() => {
    const controller = new AbortController();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const tick = async () => {
      try {
        const b = await apiJson<Batch>(`/v1/batches/${encodeURIComponent(id)}`, { key: apiKey, signal: controller.signal });
        setBatch(b);
        setError(null);
        if (BATCH_TERMINAL.has(b.status)) return;
      } catch (err) {
        if (isAbort(err)) return;
        setError(err);
        if (err instanceof ApiError && (err.status === 401 || err.status === 404)) return;
      }
      timer = setTimeout(tick, 2000);
    };
    void tick();
    return () => {
      controller.abort();
      clearTimeout(timer);
    };
  }, [id, apiKey]);

  if (error instanceof ApiError && error.status === 404) {
    return (
      <div className="notice warn" role="alert" data-testid="batches-unavailable">
        Batch <code>{id}</code> was not found: it belongs to another key, or batches are not available on this
        server. <Link href="/batches/">Back to batches</Link>.
      </div>
    );
  }
  if (!batch) return error ? <ErrorNotice error={error} title="Could not load the batch" /> : <p aria-busy="true">Loading batch…</p>;

  const counts = batch.request_counts ?? {};
  const total = counts.total ?? 0;
  const done = (counts.completed ?? 0) + (counts.failed ?? 0);
  const over = BATCH_TERMINAL.has(batch.status);
  // Lines that never ran (cancelled or expired before a worker took them).
  const notRun = over && total > done ? total - done : 0;
  const started = toMillis(batch.in_progress_at);
  const eta =
    batch.status === "in_progress" && started !== null && done > 0 && total > done
      ? ((Date.now() - started) / done) * (total - done)
      : null;
  return (
    <section aria-labelledby="batch-title">
      <h1 id="batch-title">
        Batch <code>{batch.id}</code>
      </h1>
      <p role="status" aria-live="polite">
        Status: <StatusBadge status={batch.status} testId="batch-status" />
      </p>
      <ErrorNotice error={error} title="Refresh failed" />
      <div className="field">
        <label htmlFor="batch-progress">
          Progress: {done} of {total || "?"} requests ({counts.completed ?? 0} completed, {counts.failed ?? 0} failed)
        </label>
        <progress id="batch-progress" max={total || 1} value={total ? done : 0} />
      </div>
      {notRun ? (
        <p data-testid="batch-not-run">
          {notRun} line{notRun === 1 ? "" : "s"} {batch.status === "expired" ? "expired" : "cancelled"} before running.
        </p>
      ) : null}
      {batch.status === "cancelling" ? (
        <p className="notice warn" data-testid="batch-cancelling">
          Cancelling: lines already running finish and keep their answers; lines not started will not run.{" "}
          {total - done} line{total - done === 1 ? "" : "s"} still to settle.
        </p>
      ) : null}
      {eta !== null ? (
        <p data-testid="batch-eta">
          About {formatMs(eta)} left at the pace so far ({done} line{done === 1 ? "" : "s"} in{" "}
          {formatMs(Date.now() - (started ?? Date.now()))}).
        </p>
      ) : null}
      <dl className="facts">
        <dt>Endpoint</dt>
        <dd>{batch.endpoint ?? "-"}</dd>
        <dt>Input file</dt>
        <dd>
          <code>{batch.input_file_id ?? "-"}</code>
        </dd>
        <dt>Created</dt>
        <dd>{formatTime(batch.created_at)}</dd>
        <dt>Finished</dt>
        <dd>{formatTime(batch.completed_at ?? batch.failed_at ?? batch.cancelled_at ?? batch.expired_at)}</dd>
      </dl>
      {batch.errors?.data?.length ? (
        <div className="notice error" role="alert" data-testid="batch-errors">
          <strong>The batch reported errors:</strong>
          <ul>
            {batch.errors.data.slice(0, 20).map((e, i) => (
              <li key={i}>
                {e.line != null && !/^line \d/.test(e.message ?? "") ? `line ${e.line}: ` : ""}
                {e.message}
              </li>
            ))}
          </ul>
          <p className="next-step">
            Fix the file and <Link href="/batches/">start a new batch</Link> with it.
          </p>
        </div>
      ) : null}
      <div className="actions">
        {batch.output_file_id ? (
          <DownloadButton apiKey={apiKey} fileId={batch.output_file_id} filename={`${batch.id}-output.jsonl`}>
            Download results
          </DownloadButton>
        ) : null}
        {batch.error_file_id ? (
          <DownloadButton apiKey={apiKey} fileId={batch.error_file_id} filename={`${batch.id}-errors.jsonl`}>
            Download errors
          </DownloadButton>
        ) : null}
        {!BATCH_TERMINAL.has(batch.status) && batch.status !== "cancelling" ? (
          <CancelBatch apiKey={apiKey} id={batch.id} onBatch={setBatch} />
        ) : null}
      </div>
      <BatchLines apiKey={apiKey} batchId={batch.id} live={!over} />
    </section>
  );
}

function DownloadButton(props: { apiKey: string; fileId: string; filename: string; children: React.ReactNode }) {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);
  return (
    <span>
      <button
        type="button"
        className="secondary"
        disabled={busy}
        onClick={async () => {
          setBusy(true);
          setError(null);
          try {
            await downloadFile(props.fileId, props.apiKey, props.filename);
          } catch (err) {
            setError(err);
          } finally {
            setBusy(false);
          }
        }}
      >
        {busy ? "Downloading…" : props.children}
      </button>
      <ErrorNotice error={error} title="Download failed" />
    </span>
  );
}

function CancelBatch({ apiKey, id, onBatch }: { apiKey: string; id: string; onBatch: (b: Batch) => void }) {
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);
  return (
    <span>
      <button
        type="button"
        className="danger"
        disabled={busy}
        onClick={async () => {
          setBusy(true);
          try {
            onBatch(await apiJson<Batch>(`/v1/batches/${encodeURIComponent(id)}/cancel`, { key: apiKey, method: "POST" }));
          } catch (err) {
            setError(err);
          } finally {
            setBusy(false);
          }
        }}
      >
        Cancel batch
      </button>
      <ErrorNotice error={error} title="Could not cancel" />
    </span>
  );
}

const LINES_SHOWN = 100;

// The batch's lines as jobs (GET /v1/jobs?batch_id=), newest first, refreshed while it runs.
function BatchLines({ apiKey, batchId, live }: { apiKey: string; batchId: string; live: boolean }) {
  const [lines, setLines] = useState<ListPage<Job> | null>(null);
  usePoll(
    async (signal) => {
      const q = new URLSearchParams({ batch_id: batchId, limit: String(LINES_SHOWN) });
      setLines(await apiJson<ListPage<Job>>(`/v1/jobs?${q}`, { key: apiKey, signal }));
      return live;
    },
    2000,
    [apiKey, batchId, live],
  );

  const rows = lines?.data ?? [];
  const byStatus = new Map<string, number>();
  for (const j of rows) byStatus.set(j.status, (byStatus.get(j.status) ?? 0) + 1);
  const allLink = `/jobs/?batch=${encodeURIComponent(batchId)}`;
  return (
    <section aria-labelledby="lines-title">
      <h2 id="lines-title">Lines</h2>
      {lines === null ? <p aria-busy="true">Loading lines…</p> : null}
      {lines !== null && rows.length === 0 ? <p className="muted">No lines have become jobs yet.</p> : null}
      {rows.length > 0 ? (
        <>
          <p data-testid="line-counts">
            {lines?.has_more ? `The newest ${rows.length}: ` : ""}
            {[...byStatus.entries()].map(([s, n]) => `${n} ${s}`).join(", ")}.{" "}
            <Link href={allLink}>All its lines in the jobs list</Link>
          </p>
          <div className="table-wrap">
            <table className="jobs" data-testid="batch-lines">
              <caption className="visually-hidden">The batch&apos;s lines, newest first</caption>
              <thead>
                <tr>
                  <th scope="col">Job</th>
                  <th scope="col">Status</th>
                  <th scope="col">Run time</th>
                </tr>
              </thead>
              <tbody>
                {rows.map((j) => (
                  <tr key={j.id} data-testid="line-row">
                    <td data-label="Job">
                      <Link href={`/job/?id=${encodeURIComponent(j.id)}`}>
                        <code>{j.id}</code>
                      </Link>
                    </td>
                    <td data-label="Status">
                      <StatusBadge status={j.status} />
                    </td>
                    <td data-label="Run time">{formatMs(j.metrics?.run_ms)}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        </>
      ) : null}
    </section>
  );
}
