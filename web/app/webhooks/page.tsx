"use client";

// Webhook endpoints: subscribe a URL to event types of all this key's jobs, responses
// and batches (POST /v1/webhook_endpoints). The answer carries the endpoint's signing
// secret once: it is shown here once, with a copy button, and never again (rotating
// makes a new one, shown the same way). Each endpoint links to its delivery log.

import Link from "next/link";
import { useState } from "react";
import ConfirmButton from "@/components/ConfirmButton";
import CopyButton from "@/components/CopyButton";
import ErrorNotice from "@/components/ErrorNotice";
import RequireKey from "@/components/RequireKey";
import StatusBadge from "@/components/StatusBadge";
import { apiJson, isAbort } from "@/lib/api";
import { formatTime } from "@/lib/format";
import { usePoll } from "@/lib/poll";
import { useTitle } from "@/lib/title";
import type { ListPage } from "@/lib/types";
import { ENDPOINT_EVENTS, type Endpoint } from "@/lib/webhooks";

export default function WebhooksPage() {
  useTitle("Webhooks");
  return (
    <section aria-labelledby="webhooks-title">
      <h1 id="webhooks-title">Webhooks</h1>
      <p className="muted">
        An endpoint receives a signed POST (Standard Webhooks: <code>webhook-id</code>, <code>webhook-timestamp</code>,{" "}
        <code>webhook-signature</code>) when a job, response or batch of this key ends in one of its event types; a
        failed delivery is retried with backoff.
      </p>
      <RequireKey>{(key) => <Endpoints apiKey={key} />}</RequireKey>
    </section>
  );
}

interface Shown {
  id: string;
  secret: string;
  why: "made" | "rotated";
}

function Endpoints({ apiKey }: { apiKey: string }) {
  const [endpoints, setEndpoints] = useState<Endpoint[] | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [secret, setSecret] = useState<Shown | null>(null);
  const [version, setVersion] = useState(0);

  usePoll(
    async (signal) => {
      try {
        const page = await apiJson<ListPage<Endpoint>>("/v1/webhook_endpoints", { key: apiKey, signal });
        setEndpoints(page.data ?? []);
        setError(null);
      } catch (err) {
        if (!isAbort(err)) setError(err);
        throw err;
      }
    },
    5000,
    [apiKey, version],
  );
  const reload = () => setVersion((v) => v + 1);

  return (
    <>
      <CreateForm
        apiKey={apiKey}
        onCreated={(ep) => {
          if (ep.secret) setSecret({ id: ep.id, secret: ep.secret, why: "made" });
          reload();
        }}
      />
      {secret ? <SecretOnce shown={secret} onDone={() => setSecret(null)} /> : null}
      <h2 id="endpoints-title">Endpoints</h2>
      <ErrorNotice error={error} title="Could not load the endpoints" />
      {endpoints === null && !error ? <p aria-busy="true">Loading endpoints…</p> : null}
      {endpoints !== null && endpoints.length === 0 ? (
        <p className="notice" data-testid="no-endpoints">
          No endpoints yet.
        </p>
      ) : null}
      {endpoints && endpoints.length > 0 ? (
        <div className="table-wrap">
          <table className="jobs" aria-labelledby="endpoints-title">
            <thead>
              <tr>
                <th scope="col">URL</th>
                <th scope="col">Events</th>
                <th scope="col">Status</th>
                <th scope="col">Created</th>
                <th scope="col">Actions</th>
              </tr>
            </thead>
            <tbody>
              {endpoints.map((ep) => (
                <EndpointRow
                  key={ep.id}
                  ep={ep}
                  apiKey={apiKey}
                  onRotated={(s) => {
                    setSecret({ id: ep.id, secret: s, why: "rotated" });
                    reload();
                  }}
                  onDeleted={() => {
                    if (secret?.id === ep.id) setSecret(null);
                    reload();
                  }}
                />
              ))}
            </tbody>
          </table>
        </div>
      ) : null}
    </>
  );
}

function SecretOnce({ shown, onDone }: { shown: Shown; onDone: () => void }) {
  return (
    <div className="notice success" role="status" data-testid="endpoint-secret">
      <p>
        <strong>
          Endpoint <code>{shown.id}</code> {shown.why === "made" ? "was made" : "has a new secret"}.
        </strong>{" "}
        Its signing secret is shown this once; keep it where your receiver reads it (for example{" "}
        <code>OpenAI(webhook_secret=…).webhooks.unwrap(body, headers)</code> verifies with it).
      </p>
      <p>
        <code className="secret" data-testid="secret-value">
          {shown.secret}
        </code>
      </p>
      <div className="actions">
        <CopyButton text={shown.secret} label="Copy secret" />
        <button type="button" className="secondary small-button" onClick={onDone}>
          I have kept it: hide it
        </button>
      </div>
    </div>
  );
}

function CreateForm({ apiKey, onCreated }: { apiKey: string; onCreated: (ep: Endpoint) => void }) {
  const [url, setUrl] = useState("");
  const [events, setEvents] = useState<Set<string>>(() => new Set(["job.succeeded", "job.failed"]));
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);

  function toggle(ev: string, on: boolean) {
    setEvents((prev) => {
      const next = new Set(prev);
      if (on) next.add(ev);
      else next.delete(ev);
      return next;
    });
  }

  async function onSubmit(e: React.FormEvent) {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      const ep = await apiJson<Endpoint>("/v1/webhook_endpoints", {
        key: apiKey,
        json: { url: url.trim(), events: [...events].sort() },
      });
      setUrl("");
      onCreated(ep);
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  }

  return (
    <form className="form" onSubmit={onSubmit} aria-labelledby="new-endpoint-title">
      <h2 id="new-endpoint-title">New endpoint</h2>
      <div className="field">
        <label htmlFor="endpoint-url">URL</label>
        <input
          id="endpoint-url"
          type="url"
          required
          placeholder="https://example.com/webhooks/monkey"
          value={url}
          onChange={(e) => setUrl(e.target.value)}
          autoComplete="off"
        />
      </div>
      <fieldset className="event-choice">
        <legend>Events to send</legend>
        {ENDPOINT_EVENTS.map((g) => (
          <div key={g.group} className="event-group" role="group" aria-label={g.group}>
            <span className="muted small">{g.group}</span>
            {g.events.map((ev) => (
              <div key={ev} className="field inline">
                <input
                  id={`ev-${ev}`}
                  type="checkbox"
                  checked={events.has(ev)}
                  onChange={(e) => toggle(ev, e.target.checked)}
                />
                <label htmlFor={`ev-${ev}`}>
                  <code>{ev}</code>
                </label>
              </div>
            ))}
          </div>
        ))}
      </fieldset>
      {events.size === 0 ? (
        <p className="warn-text" data-testid="no-events">
          Choose at least one event.
        </p>
      ) : null}
      <div className="actions">
        <button type="submit" disabled={busy || events.size === 0 || !url.trim()}>
          {busy ? "Creating…" : "Create endpoint"}
        </button>
      </div>
      <ErrorNotice error={error} title="Could not create the endpoint" />
    </form>
  );
}

function EndpointRow(props: {
  ep: Endpoint;
  apiKey: string;
  onRotated: (secret: string) => void;
  onDeleted: () => void;
}) {
  const { ep, apiKey } = props;
  const [busy, setBusy] = useState("");
  const [error, setError] = useState<unknown>(null);
  const path = `/v1/webhook_endpoints/${encodeURIComponent(ep.id)}`;

  async function act(what: "rotate" | "delete") {
    setBusy(what);
    setError(null);
    try {
      if (what === "rotate") {
        const out = await apiJson<Endpoint>(`${path}/rotate_secret`, { key: apiKey, method: "POST" });
        if (out.secret) props.onRotated(out.secret);
      } else {
        await apiJson(path, { key: apiKey, method: "DELETE" });
        props.onDeleted();
      }
    } catch (err) {
      setError(err);
    } finally {
      setBusy("");
    }
  }

  return (
    <tr data-testid="endpoint-row" data-endpoint-id={ep.id}>
      {/* One element per cell: on a phone each cell is a label beside its value. */}
      <td data-label="URL">
        <div className="wrap-anywhere">
          <code>{ep.url}</code>
          <br />
          <span className="muted small">{ep.id}</span>
        </div>
      </td>
      <td data-label="Events">{ep.events.join(", ")}</td>
      <td data-label="Status">
        <div>
          <StatusBadge status={ep.status} testId="endpoint-status" />
          {ep.disabled_reason ? <span className="small"> {ep.disabled_reason}</span> : null}
        </div>
      </td>
      <td data-label="Created">{formatTime(ep.created_at)}</td>
      <td data-label="Actions">
        <div>
          <div className="actions">
            <Link className="button-link" href={`/webhook/?id=${encodeURIComponent(ep.id)}`}>
              Deliveries
            </Link>
            <ConfirmButton
              label="Rotate secret"
              question="Rotate this endpoint's secret?"
              detail="Deliveries from now on are signed with a new one."
              yes="Yes, rotate it"
              no="Keep the secret"
              busy={busy === "rotate"}
              busyLabel="Rotating…"
              onConfirm={() => act("rotate")}
            />
            <ConfirmButton
              label="Delete"
              question="Delete this endpoint?"
              detail="It gets nothing more."
              yes="Yes, delete it"
              no="Keep it"
              busy={busy === "delete"}
              busyLabel="Deleting…"
              onConfirm={() => act("delete")}
            />
          </div>
          <ErrorNotice error={error} title="That did not work" />
        </div>
      </td>
    </tr>
  );
}
