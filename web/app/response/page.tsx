"use client";

// A response of the Responses API (/response/?id=resp_...): its status, its output as it
// streams (rendered as a job's is), its input items, its typed events as they arrive
// (GET /v1/responses/{id}?stream=true, resumed with starting_after after a drop), and
// Cancel for a background one. A response is a job underneath: the page links to it.

import Link from "next/link";
import { useSearchParams } from "next/navigation";
import { Suspense, useEffect, useReducer, useState } from "react";
import ConfirmButton from "@/components/ConfirmButton";
import CopyButton from "@/components/CopyButton";
import ErrorNotice from "@/components/ErrorNotice";
import GeneratedText from "@/components/GeneratedText";
import RequireKey from "@/components/RequireKey";
import StatusBadge from "@/components/StatusBadge";
import { type ApiError, apiJson, isAbort } from "@/lib/api";
import { formatTime } from "@/lib/format";
import {
  followResponse,
  initialResponseState,
  type InputItem,
  isOver,
  jobIdOf,
  type ResponseObject,
  responseReducer,
} from "@/lib/responses";
import { useTitle } from "@/lib/title";
import type { ListPage } from "@/lib/types";

export default function ResponsePage() {
  return (
    <Suspense fallback={<p aria-busy="true">Loading…</p>}>
      <ResponseFromQuery />
    </Suspense>
  );
}

function ResponseFromQuery() {
  const id = useSearchParams().get("id");
  if (!id) {
    return (
      <section aria-labelledby="response-title">
        <h1 id="response-title">Response</h1>
        <div className="notice" role="status">
          No response id in the address. A response&apos;s job links to it from <Link href="/jobs/">the jobs list</Link>.
        </div>
      </section>
    );
  }
  return <RequireKey>{(key) => <ResponseLoader key={id} id={id} apiKey={key} />}</RequireKey>;
}

function ResponseLoader({ id, apiKey }: { id: string; apiKey: string }) {
  const [first, setFirst] = useState<ResponseObject | null>(null);
  const [error, setError] = useState<unknown>(null);
  useTitle(`Response ${id}`);
  useEffect(() => {
    const controller = new AbortController();
    apiJson<ResponseObject>(`/v1/responses/${encodeURIComponent(id)}`, { key: apiKey, signal: controller.signal })
      .then(setFirst)
      .catch((err) => !isAbort(err) && setError(err));
    return () => controller.abort();
  }, [id, apiKey]);
  if (!first) {
    return (
      <section aria-labelledby="response-title">
        <h1 id="response-title">
          Response <code>{id}</code>
        </h1>
        {error ? <ErrorNotice error={error} title="Could not load the response" /> : <p aria-busy="true">Loading…</p>}
      </section>
    );
  }
  return <ResponseView id={id} apiKey={apiKey} first={first} />;
}

const MODE_TEXT = { live: "Live", reconnecting: "Stream dropped, resuming after the last event…", closed: "" };

function ResponseView({ id, apiKey, first }: { id: string; apiKey: string; first: ResponseObject }) {
  const [state, dispatch] = useReducer(responseReducer, first, initialResponseState);
  const [mode, setMode] = useState<keyof typeof MODE_TEXT | null>(null);
  const [fatal, setFatal] = useState<ApiError | null>(null);
  const [cancelError, setCancelError] = useState<unknown>(null);
  const [cancelling, setCancelling] = useState(false);
  const r = state.response ?? first;
  const status = r.status;
  const over = isOver(status);
  useTitle(`Response ${id} (${status})`);

  useEffect(() => {
    // From the start: the event list shows every event, whatever the page opened on.
    return followResponse(
      id,
      -1,
      {
        onEvent: (event) => dispatch({ kind: "event", event }),
        onMode: setMode,
        onFatal: setFatal,
      },
      apiKey,
    );
  }, [id, apiKey]);

  async function cancel() {
    setCancelling(true);
    setCancelError(null);
    try {
      const after = await apiJson<ResponseObject>(`/v1/responses/${encodeURIComponent(id)}/cancel`, {
        key: apiKey,
        method: "POST",
      });
      dispatch({ kind: "object", response: after });
    } catch (err) {
      setCancelError(err);
    } finally {
      setCancelling(false);
    }
  }

  const jobId = jobIdOf(r.id);
  return (
    <section aria-labelledby="response-title">
      <h1 id="response-title">
        Response <code data-testid="response-id">{r.id}</code>
      </h1>
      <div className="actions job-actions">
        <CopyButton text={r.id} label="Copy response id" />
        <Link href={`/job/?id=${encodeURIComponent(jobId)}`} data-testid="job-link">
          Runs as job <code>{jobId}</code>
        </Link>
      </div>
      <div className="job-head">
        <p role="status" aria-live="polite">
          Status: <StatusBadge status={status} testId="response-status" />
        </p>
        {r.background && !over ? (
          <div className="cancel">
            <ConfirmButton
              label="Cancel response"
              question="Cancel this response?"
              detail="The text so far is kept."
              yes="Yes, cancel it"
              no="Keep it running"
              busy={cancelling}
              busyLabel="Cancelling…"
              onConfirm={cancel}
            />
            <ErrorNotice error={cancelError} title="Could not cancel" />
          </div>
        ) : null}
      </div>
      {mode && MODE_TEXT[mode] && !over ? (
        <p className={`stream-mode mode-${mode}`} data-testid="stream-mode">
          {MODE_TEXT[mode]}
        </p>
      ) : null}
      <ErrorNotice error={fatal} title="Stopped following the response" />
      {r.error ? (
        <div className="notice error" role="alert" data-testid="response-error">
          <strong>{r.error.code ?? "error"}: </strong>
          {r.error.message}
        </div>
      ) : null}
      <dl className="facts">
        <dt>Model</dt>
        <dd>{r.model}</dd>
        <dt>Created</dt>
        <dd>{formatTime(r.created_at)}</dd>
        <dt>Background</dt>
        <dd>{r.background ? "yes (runs on if the client goes)" : "no"}</dd>
        {r.previous_response_id ? (
          <>
            <dt>Continues</dt>
            <dd>
              <Link href={`/response/?id=${encodeURIComponent(r.previous_response_id)}`}>
                <code>{r.previous_response_id}</code>
              </Link>
            </dd>
          </>
        ) : null}
        {r.usage ? (
          <>
            <dt>Tokens</dt>
            <dd data-testid="response-usage">
              {r.usage.input_tokens ?? 0} in, {r.usage.output_tokens ?? 0} out
            </dd>
          </>
        ) : null}
      </dl>

      <h2>Output</h2>
      <GeneratedText text={state.text} streaming={status === "in_progress"} over={over} jobId={r.id} />

      <h2>Input</h2>
      <InputItems id={r.id} apiKey={apiKey} instructions={r.instructions ?? null} />

      <h2 id="events-title">Events</h2>
      <p className="muted small" data-testid="event-count">
        {state.count} event{state.count === 1 ? "" : "s"} received
        {state.count > state.events.length ? ` (the last ${state.events.length} shown)` : ""}.
      </p>
      {/* Scrolls on its own: focusable, so that a keyboard can scroll it too. */}
      <div className="table-wrap event-log" tabIndex={0} role="region" aria-labelledby="events-title">
        <table className="jobs" aria-labelledby="events-title">
          <thead>
            <tr>
              <th scope="col">#</th>
              <th scope="col">Type</th>
              <th scope="col">Data</th>
            </tr>
          </thead>
          <tbody>
            {state.events.map((e) => (
              <tr key={e.seq} data-testid="response-event" data-type={e.type}>
                <td data-label="#">{e.seq}</td>
                <td data-label="Type">
                  <code>{e.type}</code>
                </td>
                <td data-label="Data" className="preview">
                  {e.detail}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
    </section>
  );
}

function InputItems({ id, apiKey, instructions }: { id: string; apiKey: string; instructions: string | null }) {
  const [items, setItems] = useState<InputItem[] | null>(null);
  const [error, setError] = useState<unknown>(null);
  useEffect(() => {
    const controller = new AbortController();
    apiJson<ListPage<InputItem>>(`/v1/responses/${encodeURIComponent(id)}/input_items?order=asc&limit=100`, {
      key: apiKey,
      signal: controller.signal,
    })
      .then((page) => setItems(page.data ?? []))
      .catch((err) => !isAbort(err) && setError(err));
    return () => controller.abort();
  }, [id, apiKey]);
  return (
    <>
      <ErrorNotice error={error} title="Could not load the input" />
      {instructions ? (
        <p data-testid="response-instructions">
          <strong>Instructions:</strong> {instructions}
        </p>
      ) : null}
      {items === null && !error ? <p aria-busy="true">Loading the input…</p> : null}
      {items ? (
        <ol className="input-items" data-testid="input-items">
          {items.map((item) => (
            <li key={item.id}>
              <strong>{item.role}</strong>:{" "}
              <span className="pre-wrap">{(item.content ?? []).map((c) => c.text ?? "").join("")}</span>
            </li>
          ))}
        </ol>
      ) : null}
    </>
  );
}
