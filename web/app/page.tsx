"use client";

// The new-job form: models come from GET /v1/models, the job goes to POST /v1/jobs.

import { useRouter } from "next/navigation";
import { useEffect, useMemo, useState } from "react";
import ErrorNotice from "@/components/ErrorNotice";
import RequireKey from "@/components/RequireKey";
import { apiJson } from "@/lib/api";
import type { Job, ListPage, Model } from "@/lib/types";

// The diagnostic model that streams its prompt back, waiting params.delay_ms per word.
const ECHO_MODEL = "debug/echo";

function kindsOf(model: Model | undefined): string[] {
  if (!model) return ["generate"];
  return Array.isArray(model.kinds) && model.kinds.length > 0 ? model.kinds : ["generate"];
}

export default function NewJobPage() {
  return (
    <section aria-labelledby="new-job-title">
      <h1 id="new-job-title">New job</h1>
      <RequireKey>{(key) => <NewJobForm apiKey={key} />}</RequireKey>
    </section>
  );
}

function NewJobForm({ apiKey }: { apiKey: string }) {
  const router = useRouter();
  const [models, setModels] = useState<Model[] | null>(null);
  const [modelsError, setModelsError] = useState<unknown>(null);
  const [model, setModel] = useState("");
  // For a provider entry such as "openai/*": the model name after the prefix.
  const [modelName, setModelName] = useState("");
  const [kind, setKind] = useState("generate");
  const [prompt, setPrompt] = useState("");
  const [maxTokens, setMaxTokens] = useState("256");
  const [temperature, setTemperature] = useState("0.7");
  const [priority, setPriority] = useState("interactive");
  const [delayMs, setDelayMs] = useState("");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);

  useEffect(() => {
    const controller = new AbortController();
    apiJson<ListPage<Model>>("/v1/models", { key: apiKey, signal: controller.signal })
      .then((page) => {
        const list = (Array.isArray(page.data) ? page.data : []).filter((m) => typeof m?.id === "string");
        setModels(list);
        const first = list.find((m) => m.configured !== false) ?? list[0];
        if (first) {
          setModel(first.id);
          setKind(kindsOf(first)[0]);
        }
      })
      .catch((err) => {
        if (!controller.signal.aborted) setModelsError(err);
      });
    return () => controller.abort();
  }, [apiKey]);

  const selected = useMemo(() => models?.find((m) => m.id === model), [models, model]);
  const kinds = kindsOf(selected);
  const wildcard = model.endsWith("/*");
  const prefix = wildcard ? model.slice(0, -1) : "";
  const unconfigured = (models ?? []).filter((m) => m.configured === false);

  function chooseModel(id: string) {
    setModel(id);
    const k = kindsOf(models?.find((m) => m.id === id));
    if (!k.includes(kind)) setKind(k[0]);
  }

  async function onSubmit(e: React.FormEvent) {
    e.preventDefault();
    setBusy(true);
    setError(null);
    const params: Record<string, number> = {};
    let input: Record<string, unknown>;
    if (kind === "embed") {
      input = { texts: prompt.split("\n").map((t) => t.trim()).filter(Boolean) };
    } else {
      input = { prompt };
      if (maxTokens.trim()) params.max_tokens = Number(maxTokens);
      if (temperature.trim()) params.temperature = Number(temperature);
      if (model === ECHO_MODEL && delayMs.trim()) params.delay_ms = Number(delayMs);
    }
    try {
      const job = await apiJson<Job>("/v1/jobs", {
        key: apiKey,
        json: { kind, model: wildcard ? prefix + modelName.trim() : model, input, params, priority },
      });
      router.push(`/job/?id=${encodeURIComponent(job.id)}`);
    } catch (err) {
      setError(err);
      setBusy(false);
    }
  }

  if (modelsError) return <ErrorNotice error={modelsError} title="Could not load the models" />;
  if (models === null) return <p aria-busy="true">Loading models…</p>;
  if (models.length === 0) {
    return <div className="notice">The server lists no models. Configure one on the server first.</div>;
  }

  return (
    <form onSubmit={onSubmit} className="form" aria-describedby="new-job-help">
      <p id="new-job-help" className="muted">
        The job waits in the queue, runs on a worker, and streams its tokens to the job page.
      </p>
      <div className="row">
        <div className="field">
          <label htmlFor="model">Model</label>
          <select id="model" value={model} onChange={(e) => chooseModel(e.target.value)} required>
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
              value={modelName}
              onChange={(e) => setModelName(e.target.value)}
              placeholder="the provider's model name"
              required
            />
          </div>
        ) : null}
        {kinds.length > 1 ? (
          <div className="field">
            <label htmlFor="kind">Kind</label>
            <select id="kind" value={kind} onChange={(e) => setKind(e.target.value)}>
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
          <select id="priority" value={priority} onChange={(e) => setPriority(e.target.value)}>
            <option value="interactive">interactive</option>
            <option value="batch">batch</option>
          </select>
        </div>
      </div>
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
      <div className="field">
        <label htmlFor="prompt">{kind === "embed" ? "Texts to embed (one per line)" : "Prompt"}</label>
        <textarea id="prompt" rows={6} value={prompt} onChange={(e) => setPrompt(e.target.value)} required />
      </div>
      {kind === "generate" ? (
        <div className="row">
          <div className="field">
            <label htmlFor="max-tokens">Max tokens</label>
            <input
              id="max-tokens"
              type="number"
              inputMode="numeric"
              min={1}
              step={1}
              value={maxTokens}
              onChange={(e) => setMaxTokens(e.target.value)}
            />
          </div>
          <div className="field">
            <label htmlFor="temperature">Temperature</label>
            <input
              id="temperature"
              type="number"
              inputMode="decimal"
              min={0}
              max={2}
              step={0.1}
              value={temperature}
              onChange={(e) => setTemperature(e.target.value)}
            />
          </div>
          {model === ECHO_MODEL ? (
            <div className="field">
              <label htmlFor="delay-ms">Delay per token (ms)</label>
              <input
                id="delay-ms"
                type="number"
                inputMode="numeric"
                min={0}
                step={10}
                placeholder="optional"
                value={delayMs}
                onChange={(e) => setDelayMs(e.target.value)}
                aria-describedby="delay-help"
              />
              <small id="delay-help" className="muted">
                debug/echo waits this long before each word.
              </small>
            </div>
          ) : null}
        </div>
      ) : null}
      <div className="actions">
        <button type="submit" disabled={busy || !model}>
          {busy ? "Submitting…" : "Submit job"}
        </button>
      </div>
      <ErrorNotice error={error} title="The job was not accepted" />
    </form>
  );
}
