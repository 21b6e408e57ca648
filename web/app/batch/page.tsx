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
import { formatTime } from "@/lib/format";
import { BATCH_TERMINAL, type Batch } from "@/lib/types";

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
