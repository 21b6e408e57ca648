"use client";

// One job: its status, live tokens over SSE, timings, and a Cancel button.
// The id comes from the query string (/job/?id=job_...) so the page is one static file.

import Link from "next/link";
import { useRouter, useSearchParams } from "next/navigation";
import { Suspense, useEffect, useReducer, useRef, useState } from "react";
import ConfirmButton from "@/components/ConfirmButton";
import CopyButton from "@/components/CopyButton";
import ErrorNotice from "@/components/ErrorNotice";
import GeneratedText from "@/components/GeneratedText";
import QueueInfo from "@/components/QueueInfo";
import RequireKey from "@/components/RequireKey";
import StatusBadge from "@/components/StatusBadge";
import { ApiError, apiJson } from "@/lib/api";
import { formatMs, formatNumber, formatTime, toMillis } from "@/lib/format";
import { datedHistory, initialJobState, jobReducer, type JobState } from "@/lib/jobState";
import { requestOfJob } from "@/lib/request";
import { responseIdOf } from "@/lib/responses";
import { followJob, type StreamMode } from "@/lib/sse";
import { useTitle } from "@/lib/title";
import { isTerminal, type Job } from "@/lib/types";

export default function JobPage() {
  return (
    <Suspense fallback={<p aria-busy="true">Loading…</p>}>
      <JobFromQuery />
    </Suspense>
  );
}

function JobFromQuery() {
  const id = useSearchParams().get("id");
  if (!id) {
    return (
      <div className="notice" role="status">
        No job id in the address. Open a job from <Link href="/jobs/">the jobs list</Link>.
      </div>
    );
  }
  return <RequireKey>{(key) => <JobView key={id} id={id} apiKey={key} />}</RequireKey>;
}

const MODE_TEXT: Record<StreamMode, string> = {
  connecting: "Connecting to the live stream…",
  live: "Live",
  reconnecting: "Stream dropped, reconnecting…",
  polling: "Live stream unavailable: checking the job every second.",
  closed: "",
};

function useNow(active: boolean): number {
  const [now, setNow] = useState(() => Date.now());
  useEffect(() => {
    if (!active) return;
    const t = setInterval(() => setNow(Date.now()), 250);
    return () => clearInterval(t);
  }, [active]);
  return now;
}

function JobView({ id, apiKey }: { id: string; apiKey: string }) {
  const [state, dispatch] = useReducer(jobReducer, initialJobState);
  const [loadError, setLoadError] = useState<unknown>(null);
  const [mode, setMode] = useState<StreamMode | null>(null);
  const [modeError, setModeError] = useState<ApiError | null>(null);
  const [follow, setFollow] = useState(false);

  // The envelope first; then, if the job is not over, its events.
  useEffect(() => {
    const controller = new AbortController();
    apiJson<Job>(`/v1/jobs/${encodeURIComponent(id)}`, { key: apiKey, signal: controller.signal })
      .then((job) => {
        dispatch({ type: "loaded", job, now: Date.now() });
        setFollow(!isTerminal(job.status));
      })
      .catch((err) => {
        if (!controller.signal.aborted) setLoadError(err);
      });
    return () => controller.abort();
  }, [id, apiKey]);

  useEffect(() => {
    if (!follow) return;
    return followJob(
      id,
      {
        onEvent: (ev) => dispatch({ type: "event", event: ev.event, data: ev.data, id: ev.id, now: Date.now() }),
        onPoll: (job) => dispatch({ type: "envelope", job, now: Date.now() }),
        onMode: (m, detail) => {
          setMode(m);
          setModeError(detail ?? null);
        },
        onFatal: (err) => {
          setMode("closed");
          setLoadError(err);
        },
      },
      { key: apiKey },
    );
  }, [follow, id, apiKey]);

  if (loadError && !state.job) return <ErrorNotice error={loadError} title="Could not load the job" />;
  if (!state.job) return <p aria-busy="true">Loading job…</p>;
  return (
    <JobDetails
      state={state}
      apiKey={apiKey}
      mode={mode}
      modeError={modeError}
      fatal={loadError}
      onEnvelope={(job) => dispatch({ type: "envelope", job, now: Date.now() })}
    />
  );
}

interface DetailsProps {
  state: JobState;
  apiKey: string;
  mode: StreamMode | null;
  modeError: ApiError | null;
  fatal: unknown;
  onEnvelope: (job: Job) => void;
}

function JobDetails({ state, apiKey, mode, modeError, fatal, onEnvelope }: DetailsProps) {
  const job = state.job as Job;
  const status = state.status ?? job.status;
  const over = isTerminal(status);
  const now = useNow(!over);

  const history = datedHistory(state);
  useTitle(`Job ${job.id} (${status})`);
  // After a submit lands here, focus the heading: the next Tab is not Cancel.
  const titleRef = useRef<HTMLHeadingElement>(null);
  useEffect(() => titleRef.current?.focus(), []);

  return (
    <section aria-labelledby="job-title">
      <h1 id="job-title" ref={titleRef} tabIndex={-1}>
        Job <code data-testid="job-id">{job.id}</code>
      </h1>
      <div className="actions job-actions">
        <CopyButton text={job.id} label="Copy job id" />
        <RerunButtons job={job} apiKey={apiKey} />
        {job.input?.messages ? <ResponseLink jobId={job.id} apiKey={apiKey} /> : null}
        {job.batch_id ? (
          <Link href={`/batch/?id=${encodeURIComponent(job.batch_id)}`} data-testid="batch-link">
            Line of batch <code>{job.batch_id}</code>
          </Link>
        ) : null}
      </div>
      <div className="job-head">
        <p role="status" aria-live="polite">
          Status: <StatusBadge status={status} testId="job-status" />
          {state.restarts > 0 ? (
            <span className="muted"> (restarted {state.restarts}×: the provider call was retried)</span>
          ) : null}
        </p>
        <CancelButton jobId={job.id} apiKey={apiKey} status={status} onEnvelope={onEnvelope} />
      </div>
      {mode && MODE_TEXT[mode] ? (
        <p className={`stream-mode mode-${mode}`} data-testid="stream-mode">
          {MODE_TEXT[mode]}
          {modeError && mode !== "live" ? <span className="muted"> ({modeError.message})</span> : null}
        </p>
      ) : null}
      <ErrorNotice error={fatal} title="Stopped following the job" />
      {job.error ? (
        <div className="notice error" role="alert" data-testid="job-error">
          <strong>{job.error.type ?? "error"}: </strong>
          {job.error.message}
        </div>
      ) : state.lastErrorEvent && !over ? (
        <div className="notice warn" data-testid="job-error-event">
          {state.lastErrorEvent.type ? <strong>{state.lastErrorEvent.type}: </strong> : null}
          {state.lastErrorEvent.message}
        </div>
      ) : null}

      {status === "queued" ? (
        <QueueInfo apiKey={apiKey} jobId={job.id} priority={job.priority ?? "interactive"} />
      ) : null}
      <Timings state={state} now={now} />

      <h2>Output</h2>
      <JobOutputView state={state} />

      <details>
        <summary>Request</summary>
        <dl className="facts">
          <dt>Model</dt>
          <dd>{job.model}</dd>
          <dt>Kind</dt>
          <dd>{job.kind}</dd>
          <dt>Priority</dt>
          <dd>{job.priority ?? "-"}</dd>
          <dt>Created</dt>
          <dd>{formatTime(job.created_at)}</dd>
          <dt>Attempts</dt>
          <dd>{job.attempts ?? "-"}</dd>
        </dl>
        <RequestView job={job} />
      </details>

      <h2>Status history</h2>
      <ol className="history" data-testid="status-history">
        {history.map((h, i) => (
          <li key={`${h.status}-${i}`} data-status={h.status}>
            {h.status}{" "}
            <time className="muted" dateTime={new Date(h.at).toISOString()}>
              {new Date(h.at).toLocaleTimeString()}
            </time>
            {i > 0 ? <span className="muted"> (+{formatMs(h.at - history[0].at)})</span> : null}
          </li>
        ))}
      </ol>
    </section>
  );
}

function Timings({ state, now }: { state: JobState; now: number }) {
  const job = state.job as Job;
  const status = state.status ?? job.status;
  const m = job.metrics ?? {};
  const created = toMillis(job.created_at);
  const started = toMillis(job.started_at) ?? state.runningSince;
  // Live figures from the clock until the server's metrics arrive with the final envelope.
  const finished = toMillis(job.finished_at);
  // Without the server's figure: the wait so far, or until it started (or ended unstarted).
  const queueEnd = status === "queued" ? now : (started ?? finished);
  const queueMs = m.queue_ms ?? (created !== null && queueEnd !== null ? queueEnd - created : null);
  const generate = job.kind !== "embed";
  const running = status === "running" || status === "cancelling";
  const runMs = m.run_ms ?? (running && started !== null ? now - started : null);
  // Live estimates from the streamed events until the final metrics arrive.
  const ttftMs = m.ttft_ms ?? (state.firstTokenAt !== null && started !== null ? state.firstTokenAt - started : null);
  const spanS = state.lastTokenAt !== null && started !== null ? (state.lastTokenAt - started) / 1000 : 0;
  const tokensPerS = m.tokens_per_s ?? (running && spanS > 0 ? state.tokens / spanS : null);
  const completion = m.completion_tokens ?? job.output?.usage?.completion_tokens ?? null;
  const prompt = m.prompt_tokens ?? job.output?.usage?.prompt_tokens ?? null;
  return (
    <dl className="facts metrics" data-testid="metrics">
      <dt>{status === "queued" ? "Waiting in queue" : "Queue wait"}</dt>
      <dd data-testid="queue-ms">{formatMs(queueMs)}</dd>
      <dt>Run time</dt>
      <dd data-testid="run-ms">{formatMs(runMs)}</dd>
      {generate ? (
        <>
          <dt>Time to first token</dt>
          <dd data-testid="ttft-ms">{formatMs(ttftMs)}</dd>
          <dt>Tokens per second</dt>
          <dd data-testid="tokens-per-s">{formatNumber(tokensPerS, 1)}</dd>
          <dt>Prompt tokens</dt>
          <dd data-testid="prompt-tokens">{prompt ?? "-"}</dd>
          <dt>{completion !== null ? "Completion tokens" : "Tokens streamed"}</dt>
          <dd data-testid="completion-tokens">{completion ?? state.tokens}</dd>
        </>
      ) : (
        <>
          <dt>Texts</dt>
          <dd>{job.input?.texts?.length ?? "-"}</dd>
        </>
      )}
      {job.output?.finish_reason ? (
        <>
          <dt>Finish reason</dt>
          <dd data-testid="finish-reason">{job.output.finish_reason}</dd>
        </>
      ) : null}
    </dl>
  );
}

function JobOutputView({ state }: { state: JobState }) {
  const job = state.job as Job;
  const status = state.status ?? job.status;
  const out = job.output;
  if (job.kind === "embed") {
    if (!out?.embeddings) {
      return <p className="muted">{isTerminal(status) ? "(no embeddings)" : "No embeddings yet."}</p>;
    }
    return (
      <div data-testid="embeddings">
        <p>
          {out.embeddings.length} embedding{out.embeddings.length === 1 ? "" : "s"} of dimension{" "}
          {out.dim ?? out.embeddings[0]?.length ?? "?"}.
        </p>
        <pre className="output">
          {out.embeddings
            .slice(0, 5)
            .map((v) => `[${v.slice(0, 8).map((x) => x.toFixed(4)).join(", ")}${v.length > 8 ? ", …" : ""}]`)
            .join("\n")}
        </pre>
      </div>
    );
  }
  const streaming = status === "running" || status === "cancelling";
  return <GeneratedText text={state.text} streaming={streaming} over={isTerminal(status)} jobId={job.id} />;
}

function CancelButton(props: { jobId: string; apiKey: string; status: string; onEnvelope: (job: Job) => void }) {
  const { jobId, apiKey, status, onEnvelope } = props;
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);
  if (isTerminal(status)) return null;
  const cancelling = status === "cancelling";

  async function cancel() {
    setBusy(true);
    setError(null);
    try {
      onEnvelope(await apiJson<Job>(`/v1/jobs/${encodeURIComponent(jobId)}/cancel`, { key: apiKey, method: "POST" }));
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  }

  // Cancelling loses the rest of the work, so it asks first.
  return (
    <div className="cancel">
      <ConfirmButton
        label={cancelling ? "Cancelling…" : "Cancel job"}
        question="Cancel this job?"
        detail="The text so far is kept."
        yes="Yes, cancel it"
        no="Keep it running"
        busy={busy}
        busyLabel="Sending cancel…"
        disabled={cancelling}
        onConfirm={cancel}
      />
      <ErrorNotice error={error} title="Could not cancel" />
    </div>
  );
}

// A response of the Responses API is a job underneath (`resp_X` runs as `job_X`): a job
// made that way links to its response's page. Any other job's lookup answers 404.
function ResponseLink({ jobId, apiKey }: { jobId: string; apiKey: string }) {
  const [responseId, setResponseId] = useState<string | null>(null);
  useEffect(() => {
    const controller = new AbortController();
    const id = responseIdOf(jobId);
    apiJson<{ id: string }>(`/v1/responses/${encodeURIComponent(id)}`, { key: apiKey, signal: controller.signal })
      .then((r) => setResponseId(r.id))
      .catch(() => undefined);
    return () => controller.abort();
  }, [jobId, apiKey]);
  if (!responseId) return null;
  return (
    <Link href={`/response/?id=${encodeURIComponent(responseId)}`} data-testid="response-link">
      Runs response <code>{responseId}</code>
    </Link>
  );
}

function RerunButtons({ job, apiKey }: { job: Job; apiKey: string }) {
  const router = useRouter();
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);
  async function rerun() {
    setBusy(true);
    setError(null);
    try {
      const next = await apiJson<Job>("/v1/jobs", { key: apiKey, json: requestOfJob(job) });
      router.push(`/job/?id=${encodeURIComponent(next.id)}`);
    } catch (err) {
      setError(err);
      setBusy(false);
    }
  }
  return (
    <>
      <button type="button" className="secondary small-button" onClick={rerun} disabled={busy}>
        {busy ? "Submitting…" : "Run again"}
      </button>
      <Link className="button-link" href={`/?from=${encodeURIComponent(job.id)}`}>
        Edit and resubmit
      </Link>
      <ErrorNotice error={error} title="The job was not accepted" />
    </>
  );
}

function RequestView({ job }: { job: Job }) {
  const input = job.input ?? {};
  const params = Object.entries(job.params ?? {});
  return (
    <div data-testid="request">
      {input.messages ? (
        <ol className="messages">
          {input.messages.map((m, i) => (
            <li key={i}>
              <strong>{m.role}</strong>
              <pre className="input">{m.content}</pre>
            </li>
          ))}
        </ol>
      ) : input.texts ? (
        <>
          <h3 className="small">Texts</h3>
          <pre className="input">{input.texts.join("\n")}</pre>
        </>
      ) : (
        <>
          <h3 className="small">Prompt</h3>
          <pre className="input" data-testid="request-prompt">
            {input.prompt ?? ""}
          </pre>
        </>
      )}
      {params.length ? (
        <dl className="facts">
          {params.map(([k, v]) => (
            <div key={k} className="fact">
              <dt>{k}</dt>
              <dd>
                <code>{typeof v === "string" ? v : JSON.stringify(v)}</code>
              </dd>
            </div>
          ))}
        </dl>
      ) : null}
    </div>
  );
}
