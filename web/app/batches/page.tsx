"use client";

// Batches: upload a JSONL file (POST /v1/files, purpose=batch), start a batch on it
// (POST /v1/batches), and list the batches of this key.

import Link from "next/link";
import { useRouter } from "next/navigation";
import { useEffect, useState } from "react";
import ErrorNotice from "@/components/ErrorNotice";
import { useTitle } from "@/lib/title";
import RequireKey from "@/components/RequireKey";
import StatusBadge from "@/components/StatusBadge";
import { apiJson, isAbort } from "@/lib/api";
import { BATCH_ENDPOINTS, BATCHES_UNAVAILABLE, badJsonlLines, unavailable } from "@/lib/batches";
import { formatTime } from "@/lib/format";
import type { Batch, FileObject, ListPage } from "@/lib/types";

export default function BatchesPage() {
  useTitle("Batches");
  return (
    <section aria-labelledby="batches-title">
      <h1 id="batches-title">Batches</h1>
      <RequireKey>
        {(key) => (
          <>
            <UploadForm apiKey={key} />
            <BatchList apiKey={key} />
          </>
        )}
      </RequireKey>
    </section>
  );
}

const EXAMPLE =
  '{"custom_id": "r1", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "debug/echo", "messages": [{"role": "user", "content": "hello"}]}}';

function UploadForm({ apiKey }: { apiKey: string }) {
  const router = useRouter();
  const [file, setFile] = useState<File | null>(null);
  const [endpoint, setEndpoint] = useState<string>(BATCH_ENDPOINTS[0]);
  const [busy, setBusy] = useState("");
  const [error, setError] = useState<unknown>(null);
  const [badLines, setBadLines] = useState<number[]>([]);
  const [missing, setMissing] = useState(false);

  async function onSubmit(e: React.FormEvent) {
    e.preventDefault();
    if (!file) return;
    setError(null);
    setMissing(false);
    const bad = badJsonlLines(await file.text());
    setBadLines(bad);
    if (bad.length > 0) return;
    try {
      setBusy("Uploading the file…");
      const form = new FormData();
      form.set("purpose", "batch");
      form.set("file", file, file.name);
      const uploaded = await apiJson<FileObject>("/v1/files", { key: apiKey, form });
      setBusy("Starting the batch…");
      const batch = await apiJson<Batch>("/v1/batches", {
        key: apiKey,
        json: { input_file_id: uploaded.id, endpoint, completion_window: "24h" },
      });
      router.push(`/batch/?id=${encodeURIComponent(batch.id)}`);
    } catch (err) {
      if (unavailable(err)) setMissing(true);
      else setError(err);
      setBusy("");
    }
  }

  return (
    <form className="form" onSubmit={onSubmit} aria-labelledby="upload-title">
      <h2 id="upload-title">New batch</h2>
      <p className="muted">
        One request per line, in the OpenAI Batch format, for example:
        <br />
        <code className="example">{EXAMPLE}</code>
      </p>
      <div className="row">
        <div className="field">
          <label htmlFor="batch-file">JSONL file</label>
          <input
            id="batch-file"
            type="file"
            accept=".jsonl,.json,.txt,application/jsonl,application/x-ndjson"
            onChange={(e) => {
              setFile(e.target.files?.[0] ?? null);
              setBadLines([]);
            }}
            required
          />
        </div>
        <div className="field">
          <label htmlFor="batch-endpoint">Endpoint</label>
          <select id="batch-endpoint" value={endpoint} onChange={(e) => setEndpoint(e.target.value)}>
            {BATCH_ENDPOINTS.map((ep) => (
              <option key={ep} value={ep}>
                {ep}
              </option>
            ))}
          </select>
        </div>
      </div>
      <div className="actions">
        <button type="submit" disabled={!file || busy !== ""}>
          {busy || "Upload and start"}
        </button>
      </div>
      {badLines.length > 0 ? (
        <div className="notice error" role="alert">
          Not JSON objects: line{badLines.length > 1 ? "s" : ""} {badLines.slice(0, 10).join(", ")}
          {badLines.length > 10 ? "…" : ""}. Fix the file and choose it again.
        </div>
      ) : null}
      {missing ? (
        <div className="notice warn" role="alert" data-testid="batches-unavailable">
          {BATCHES_UNAVAILABLE} Submit jobs one by one from <Link href="/">New job</Link> instead.
        </div>
      ) : null}
      <ErrorNotice error={error} title="The batch was not started" />
    </form>
  );
}

function BatchList({ apiKey }: { apiKey: string }) {
  const [cursors, setCursors] = useState<string[]>([""]);
  const [page, setPage] = useState<ListPage<Batch> | null>(null);
  const [error, setError] = useState<unknown>(null);
  const after = cursors[cursors.length - 1];

  useEffect(() => {
    const controller = new AbortController();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const tick = async () => {
      const q = new URLSearchParams({ limit: "20" });
      if (after) q.set("after", after);
      try {
        setPage(await apiJson<ListPage<Batch>>(`/v1/batches?${q}`, { key: apiKey, signal: controller.signal }));
        setError(null);
      } catch (err) {
        if (isAbort(err)) return;
        setError(err);
        if (unavailable(err)) return; // no point asking again
      }
      timer = setTimeout(tick, 3000);
    };
    void tick();
    return () => {
      controller.abort();
      clearTimeout(timer);
    };
  }, [apiKey, after]);

  const rows = Array.isArray(page?.data) ? page.data : [];
  const lastId = page?.last_id ?? rows[rows.length - 1]?.id;
  return (
    <section aria-labelledby="batch-list-title">
      <h2 id="batch-list-title">Your batches</h2>
      {unavailable(error) ? (
        <div className="notice warn" role="status" data-testid="batches-unavailable">
          {BATCHES_UNAVAILABLE}
        </div>
      ) : (
        <ErrorNotice error={error} title="Could not load the batches" />
      )}
      {page !== null && rows.length === 0 ? <p className="muted">No batches yet.</p> : null}
      {rows.length > 0 ? (
        <div className="table-wrap">
          <table className="jobs">
            <caption className="visually-hidden">Batches, newest first</caption>
            <thead>
              <tr>
                <th scope="col">Batch</th>
                <th scope="col">Status</th>
                <th scope="col">Endpoint</th>
                <th scope="col">Progress</th>
                <th scope="col">Created</th>
              </tr>
            </thead>
            <tbody>
              {rows.map((b) => {
                const c = b.request_counts ?? {};
                return (
                  <tr key={b.id}>
                    <td data-label="Batch">
                      <Link href={`/batch/?id=${encodeURIComponent(b.id)}`}>
                        <code>{b.id}</code>
                      </Link>
                    </td>
                    <td data-label="Status">
                      <StatusBadge status={b.status} />
                    </td>
                    <td data-label="Endpoint">{b.endpoint ?? "-"}</td>
                    <td data-label="Progress">
                      {(c.completed ?? 0) + (c.failed ?? 0)} / {c.total ?? "?"}
                    </td>
                    <td data-label="Created">{formatTime(b.created_at)}</td>
                  </tr>
                );
              })}
            </tbody>
          </table>
        </div>
      ) : null}
      {cursors.length > 1 || page?.has_more ? (
        <nav className="pager" aria-label="Batch pages">
          <button type="button" className="secondary" disabled={cursors.length <= 1} onClick={() => setCursors((c) => c.slice(0, -1))}>
            Newer
          </button>
          <span className="muted">Page {cursors.length}</span>
          <button
            type="button"
            className="secondary"
            disabled={!page?.has_more || !lastId}
            onClick={() => lastId && setCursors((c) => [...c, lastId])}
          >
            Older
          </button>
        </nav>
      ) : null}
    </section>
  );
}
