"use client";

// The API key screen: the key is checked against the API before it is stored.

import Link from "next/link";
import { useState } from "react";
import ErrorNotice from "@/components/ErrorNotice";
import { useTitle } from "@/lib/title";
import { ApiError, apiJson } from "@/lib/api";
import { forgetKey, saveKey, useApiKey } from "@/lib/key";

export default function KeyPage() {
  useTitle("API key");
  const stored = useApiKey();
  const [draft, setDraft] = useState("");
  const [show, setShow] = useState(false);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);
  const [saved, setSaved] = useState(false);

  async function onSubmit(e: React.FormEvent) {
    e.preventDefault();
    const key = draft.trim();
    if (!key) return;
    setBusy(true);
    setError(null);
    setSaved(false);
    try {
      // Any authenticated read will do: it answers 401 for a key the API does not know.
      await apiJson("/v1/jobs?limit=1", { key });
      saveKey(key);
      setDraft("");
      setSaved(true);
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  }

  const refused = error instanceof ApiError && (error.status === 401 || error.status === 403);

  return (
    <section aria-labelledby="key-title">
      <h1 id="key-title">API key</h1>
      <p>
        Every request to the API carries your key. It is kept in this browser only (its local
        storage). Create one on the server with <code>monkey keys create --name NAME</code>.
      </p>
      <p data-testid="stored-key">
        {stored === undefined
          ? ""
          : stored
            ? `A key ending in …${stored.slice(-4)} is stored.`
            : "No key is stored yet."}
      </p>
      <form onSubmit={onSubmit} className="form">
        <div className="field">
          <label htmlFor="api-key">API key</label>
          <input
            id="api-key"
            name="api-key"
            type={show ? "text" : "password"}
            autoComplete="off"
            spellCheck={false}
            value={draft}
            onChange={(e) => setDraft(e.target.value)}
            required
          />
        </div>
        <div className="field inline">
          <input id="show-key" type="checkbox" checked={show} onChange={(e) => setShow(e.target.checked)} />
          <label htmlFor="show-key">Show the key while typing</label>
        </div>
        <div className="actions">
          <button type="submit" disabled={busy || !draft.trim()}>
            {busy ? "Checking…" : "Save key"}
          </button>
          {stored ? (
            <button
              type="button"
              className="secondary"
              onClick={() => {
                forgetKey();
                setSaved(false);
              }}
            >
              Forget the stored key
            </button>
          ) : null}
        </div>
      </form>
      {refused ? (
        <div className="notice error" role="alert" data-testid="error">
          <strong>The API refused this key: </strong>
          <span data-testid="error-message">{(error as ApiError).message}</span>
          <p className="next-step">
            Check that you copied the whole key (the last line printed by{" "}
            <code>monkey keys create</code>) and enter it again. It was not saved.
          </p>
        </div>
      ) : (
        <ErrorNotice error={error} title="The key could not be checked" />
      )}
      {saved ? (
        <div className="notice success" role="status" data-testid="key-saved">
          Key accepted and saved. <Link href="/">Submit a job</Link> or{" "}
          <Link href="/jobs/">see your jobs</Link>.
        </div>
      ) : null}
    </section>
  );
}
