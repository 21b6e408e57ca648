"use client";

// The new-job form: models from GET /v1/models (what each is, the parameters it reads,
// where it is loaded), whether a worker serves its queue (GET /v1/queues), a system
// message and earlier turns, every generation parameter; the job goes to POST /v1/jobs.
// The draft is kept in this tab (Back after a submit finds it again), and ?from=JOB_ID
// fills it from an earlier job ("Edit and resubmit").

import { useRouter, useSearchParams } from "next/navigation";
import { Suspense, useEffect, useMemo, useRef, useState } from "react";
import ErrorNotice from "@/components/ErrorNotice";
import RequireKey from "@/components/RequireKey";
import { apiJson, isAbort } from "@/lib/api";
import {
  draftFromJob,
  ECHO_MODEL,
  emptyDraft,
  loadDraft,
  requestFromDraft,
  saveDraft,
  type Draft,
  type Turn,
} from "@/lib/request";
import { usePoll } from "@/lib/poll";
import { useTitle } from "@/lib/title";
import type { Job, ListPage, Model, QueueStat } from "@/lib/types";

function kindsOf(model: Model | undefined): string[] {
  if (!model) return ["generate"];
  return Array.isArray(model.kinds) && model.kinds.length > 0 ? model.kinds : ["generate"];
}

/** The catalog entry a model name falls under: itself, or its provider's "NAME/*". */
function entryOf(models: Model[], id: string): Model | undefined {
  return models.find((m) => m.id === id) ?? models.find((m) => m.id === `${id.split("/")[0]}/*`);
}

export default function NewJobPage() {
  useTitle("New job");
  return (
    <section aria-labelledby="new-job-title">
      <h1 id="new-job-title">New job</h1>
      <Suspense fallback={<p aria-busy="true">Loading…</p>}>
        <RequireKey>{(key) => <NewJobForm apiKey={key} />}</RequireKey>
      </Suspense>
    </section>
  );
}

function useQueues(apiKey: string): QueueStat[] | null {
  const [queues, setQueues] = useState<QueueStat[] | null>(null);
  // Without queue figures the form still works; it just cannot warn (errors are ignored).
  usePoll(
    async (signal) => {
      const page = await apiJson<ListPage<QueueStat>>("/v1/queues", { key: apiKey, signal });
      setQueues(Array.isArray(page.data) ? page.data : []);
    },
    5000,
    [apiKey],
  );
  return queues;
}

function NewJobForm({ apiKey }: { apiKey: string }) {
  const router = useRouter();
  const from = useSearchParams().get("from");
  const [models, setModels] = useState<Model[] | null>(null);
  const [modelsError, setModelsError] = useState<unknown>(null);
  const [draft, setDraft] = useState<Draft | null>(null);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);
  const queues = useQueues(apiKey);
  const formRef = useRef<HTMLFormElement>(null);

  useEffect(() => {
    const controller = new AbortController();
    const signal = controller.signal;
    (async () => {
      try {
        const page = await apiJson<ListPage<Model>>("/v1/models", { key: apiKey, signal });
        const list = (Array.isArray(page.data) ? page.data : []).filter((m) => typeof m?.id === "string");
        let start: Draft | null = null;
        if (from) {
          try {
            start = draftFromJob(await apiJson<Job>(`/v1/jobs/${encodeURIComponent(from)}`, { key: apiKey, signal }));
          } catch (err) {
            if (isAbort(err)) return;
            setError(err);
          }
        }
        start = start ?? loadDraft();
        if (!start || !entryOf(list, start.model)) {
          const first = list.find((m) => m.configured !== false) ?? list[0];
          start = { ...(start ?? emptyDraft), model: first?.id ?? "", kind: kindsOf(first)[0] };
        }
        setModels(list);
        setDraft(start);
      } catch (err) {
        if (!isAbort(err)) setModelsError(err);
      }
    })();
    return () => controller.abort();
  }, [apiKey, from]);

  useEffect(() => {
    if (draft) saveDraft(draft);
  }, [draft]);

  const selected = useMemo(() => (models && draft ? entryOf(models, draft.model) : undefined), [models, draft]);

  if (modelsError) return <ErrorNotice error={modelsError} title="Could not load the models" />;
  if (models === null || draft === null) return <p aria-busy="true">Loading models…</p>;
  if (models.length === 0) {
    return <div className="notice">The server lists no models. Configure one on the server first.</div>;
  }

  const d = draft;
  const update = (patch: Partial<Draft>) => setDraft((prev) => ({ ...(prev ?? emptyDraft), ...patch }));
  const kinds = kindsOf(selected);
  const wildcard = selected?.id.endsWith("/*") ?? false;
  const prefix = wildcard ? (selected?.id.slice(0, -1) ?? "") : "";
  const unconfigured = models.filter((m) => m.configured === false);
  const accepts = Array.isArray(selected?.params) ? selected.params : null;
  const takes = (p: string) => accepts === null || accepts.includes(p);
  const queue = queues?.find((q) => q.queue === selected?.queue);
  const noWorker = queue !== undefined && (queue.workers ?? 0) === 0;

  function chooseModel(id: string) {
    const entry = models?.find((m) => m.id === id);
    const k = kindsOf(entry);
    update({ model: id.endsWith("/*") ? id.slice(0, -1) : id, kind: k.includes(d.kind) ? d.kind : k[0] });
  }

  function setTurn(i: number, patch: Partial<Turn>) {
    update({ turns: d.turns.map((t, j) => (j === i ? { ...t, ...patch } : t)) });
  }

  async function onSubmit(e: React.FormEvent) {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      const job = await apiJson<Job>("/v1/jobs", { key: apiKey, json: requestFromDraft(d, accepts) });
      router.push(`/job/?id=${encodeURIComponent(job.id)}`);
    } catch (err) {
      setError(err);
      setBusy(false);
    }
  }

  // Ctrl+Enter (Cmd+Enter on a Mac) submits from anywhere in the form.
  function onKeyDown(e: React.KeyboardEvent) {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey) && !busy) {
      e.preventDefault();
      formRef.current?.requestSubmit();
    }
  }

  const generate = d.kind === "generate";
  return (
    <form ref={formRef} onSubmit={onSubmit} onKeyDown={onKeyDown} className="form" aria-describedby="new-job-help">
      <p id="new-job-help" className="muted">
        The job waits in the queue, runs on a worker, and streams its tokens to the job page.{" "}
        <kbd>Ctrl</kbd>+<kbd>Enter</kbd> submits.
      </p>
      {from ? (
        <p className="notice" data-testid="from-job">
          Filled in from job <code>{from}</code>: change what you like and submit.
        </p>
      ) : null}
      <div className="row">
        <div className="field">
          <label htmlFor="model">Model</label>
          <select
            id="model"
            value={selected?.id ?? ""}
            onChange={(e) => chooseModel(e.target.value)}
            required
            aria-describedby="model-info"
          >
            {models.map((m) => (
              <option key={m.id} value={m.id} disabled={m.configured === false}>
                {m.id}
                {m.configured === false ? " (not configured)" : ""}
              </option>
            ))}
          </select>
        </div>
        {wildcard ? (
          <div className="field">
            <label htmlFor="model-name">Model name ({prefix}…)</label>
            <input
              id="model-name"
              type="text"
              autoComplete="off"
              spellCheck={false}
              value={d.model.slice(prefix.length)}
              onChange={(e) => update({ model: prefix + e.target.value.trim() })}
              placeholder="the provider's model name"
              required
            />
          </div>
        ) : null}
        {kinds.length > 1 ? (
          <div className="field">
            <label htmlFor="kind">Kind</label>
            <select id="kind" value={d.kind} onChange={(e) => update({ kind: e.target.value })}>
              {kinds.map((k) => (
                <option key={k} value={k}>
                  {k}
                </option>
              ))}
            </select>
          </div>
        ) : null}
        <div className="field">
          <label htmlFor="priority">Priority</label>
          <select id="priority" value={d.priority} onChange={(e) => update({ priority: e.target.value })}>
            <option value="interactive">interactive</option>
            <option value="batch">batch</option>
          </select>
        </div>
      </div>
      <ModelInfo model={selected} queue={queue} />
      {noWorker ? (
        <div className="notice warn" role="status" data-testid="no-worker-warning">
          No worker serves the <code>{queue?.queue}</code> queue right now: a job for this model will wait until one
          starts (<code>monkey worker --queues {queue?.queue}</code>).
        </div>
      ) : null}
      {unconfigured.length > 0 ? (
        <details>
          <summary>Why are some models unavailable?</summary>
          <ul>
            {unconfigured.map((m) => (
              <li key={m.id}>
                <code>{m.id}</code>: {m.hint ?? "not configured on this server"}
              </li>
            ))}
          </ul>
        </details>
      ) : null}
      {generate ? (
        <>
          <div className="field">
            <label htmlFor="system">System message (optional)</label>
            <textarea id="system" rows={2} value={d.system} onChange={(e) => update({ system: e.target.value })} />
          </div>
          {d.turns.map((t, i) => (
            <fieldset key={i} className="turn" data-testid="turn">
              <legend>Earlier turn {i + 1}</legend>
              <div className="row">
                <div className="field">
                  <label htmlFor={`turn-role-${i}`}>Role</label>
                  <select
                    id={`turn-role-${i}`}
                    value={t.role}
                    onChange={(e) => setTurn(i, { role: e.target.value === "assistant" ? "assistant" : "user" })}
                  >
                    <option value="user">user</option>
                    <option value="assistant">assistant</option>
                  </select>
                </div>
                <button
                  type="button"
                  className="secondary small-button"
                  onClick={() => update({ turns: d.turns.filter((_, j) => j !== i) })}
                >
                  Remove turn {i + 1}
                </button>
              </div>
              <div className="field">
                <label htmlFor={`turn-content-${i}`}>Message</label>
                <textarea
                  id={`turn-content-${i}`}
                  rows={3}
                  value={t.content}
                  onChange={(e) => setTurn(i, { content: e.target.value })}
                />
              </div>
            </fieldset>
          ))}
          <div>
            <button
              type="button"
              className="secondary small-button"
              onClick={() =>
                update({
                  turns: [...d.turns, { role: d.turns.length % 2 === 0 ? "user" : "assistant", content: "" }],
                })
              }
            >
              Add an earlier turn
            </button>
          </div>
        </>
      ) : null}
      <div className="field">
        <label htmlFor="prompt">{generate ? "Prompt" : "Texts to embed (one per line)"}</label>
        <textarea id="prompt" rows={6} value={d.prompt} onChange={(e) => update({ prompt: e.target.value })} required />
      </div>
      {generate ? (
        <div className="row params">
          {takes("max_tokens") ? (
            <NumberField id="max-tokens" label="Max tokens" value={d.maxTokens} min={1} step={1}
              onChange={(v) => update({ maxTokens: v })} />
          ) : null}
          {takes("temperature") ? (
            <NumberField id="temperature" label="Temperature" value={d.temperature} min={0} max={2} step={0.1}
              onChange={(v) => update({ temperature: v })} />
          ) : null}
          {takes("top_p") ? (
            <NumberField id="top-p" label="Top p" value={d.topP} min={0} max={1} step={0.05}
              onChange={(v) => update({ topP: v })} />
          ) : null}
          {takes("seed") ? (
            <NumberField id="seed" label="Seed" value={d.seed} step={1} onChange={(v) => update({ seed: v })} />
          ) : null}
          {takes("stop") ? (
            <div className="field">
              <label htmlFor="stop">Stop sequences (one per line)</label>
              <textarea id="stop" rows={1} value={d.stop} onChange={(e) => update({ stop: e.target.value })} />
            </div>
          ) : null}
          {d.model === ECHO_MODEL ? (
            <div className="field">
              <NumberField id="delay-ms" label="Delay per token (ms)" value={d.delayMs} min={0} step={10}
                onChange={(v) => update({ delayMs: v })} describedBy="delay-help" />
              <small id="delay-help" className="muted">
                debug/echo waits this long before each word.
              </small>
            </div>
          ) : null}
        </div>
      ) : null}
      <div className="actions">
        <button type="submit" disabled={busy || !d.model}>
          {busy ? "Submitting…" : "Submit job"}
        </button>
        <button
          type="button"
          className="secondary"
          onClick={() => setDraft({ ...emptyDraft, model: d.model, kind: d.kind })}
        >
          Clear the form
        </button>
      </div>
      <ErrorNotice error={error} title="The job was not accepted" />
    </form>
  );
}

function NumberField(props: {
  id: string;
  label: string;
  value: string;
  onChange: (v: string) => void;
  min?: number;
  max?: number;
  step?: number;
  describedBy?: string;
}) {
  return (
    <div className="field">
      <label htmlFor={props.id}>{props.label}</label>
      <input
        id={props.id}
        type="number"
        inputMode="decimal"
        min={props.min}
        max={props.max}
        step={props.step}
        placeholder="default"
        value={props.value}
        onChange={(e) => props.onChange(e.target.value)}
        aria-describedby={props.describedBy}
      />
    </div>
  );
}

function ModelInfo({ model, queue }: { model: Model | undefined; queue: QueueStat | undefined }) {
  if (!model) return null;
  const local = model.queue === "gpu";
  return (
    <dl className="facts model-info" id="model-info" data-testid="model-info">
      {model.description ? (
        <div>
          <dt>What</dt>
          <dd data-testid="model-description">{model.description}</dd>
        </div>
      ) : null}
      <div>
        <dt>Kinds</dt>
        <dd>{kindsOf(model).join(", ")}</dd>
      </div>
      {model.params ? (
        <div>
          <dt>Parameters</dt>
          <dd data-testid="model-params">{model.params.length ? model.params.join(", ") : "none"}</dd>
        </div>
      ) : null}
      {model.queue ? (
        <div>
          <dt>Runs on</dt>
          <dd>
            the <code>{model.queue}</code> queue
            {queue ? `: ${queue.workers ?? 0} worker${queue.workers === 1 ? "" : "s"}, ${queue.running ?? 0} running` : ""}
          </dd>
        </div>
      ) : null}
      {local ? (
        <div>
          <dt>Loaded on</dt>
          <dd data-testid="model-loaded-on">
            {model.loaded_on?.length
              ? model.loaded_on.join(", ")
              : "no worker yet (a gpu worker loads it when it starts)"}
          </dd>
        </div>
      ) : null}
    </dl>
  );
}
