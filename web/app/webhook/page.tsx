"use client";

// One webhook endpoint's delivery log (/webhook/?id=we_...): its latest deliveries,
// newest first (GET /v1/webhook_endpoints/{id}/deliveries), each with its event id
// (the `webhook-id` the receiver saw), type, status, the receiver's last status code,
// when it was last tried and when it is tried next; refreshed every three seconds.

import Link from "next/link";
import { useSearchParams } from "next/navigation";
import { Suspense, useState } from "react";
import ErrorNotice from "@/components/ErrorNotice";
import RequireKey from "@/components/RequireKey";
import StatusBadge from "@/components/StatusBadge";
import { apiJson, isAbort } from "@/lib/api";
import { formatTime } from "@/lib/format";
import { usePoll } from "@/lib/poll";
import { useTitle } from "@/lib/title";
import type { ListPage } from "@/lib/types";
import { type Delivery, type Endpoint, lastAttemptAt } from "@/lib/webhooks";

export default function WebhookPage() {
  return (
    <Suspense fallback={<p aria-busy="true">Loading…</p>}>
      <FromQuery />
    </Suspense>
  );
}

function FromQuery() {
  const id = useSearchParams().get("id");
  useTitle(id ? `Deliveries of ${id}` : "Deliveries");
  return (
    <section aria-labelledby="webhook-title">
      <h1 id="webhook-title">
        Deliveries{id ? (
          <>
            {" "}
            of <code>{id}</code>
          </>
        ) : null}
      </h1>
      <p>
        <Link href="/webhooks/">All webhook endpoints</Link>
      </p>
      {id ? (
        <RequireKey>{(key) => <DeliveryLog key={id} id={id} apiKey={key} />}</RequireKey>
      ) : (
        <div className="notice" role="status">
          No endpoint id in the address. Open one from <Link href="/webhooks/">the webhooks page</Link>.
        </div>
      )}
    </section>
  );
}

function DeliveryLog({ id, apiKey }: { id: string; apiKey: string }) {
  const [endpoint, setEndpoint] = useState<Endpoint | null>(null);
  const [deliveries, setDeliveries] = useState<Delivery[] | null>(null);
  const [error, setError] = useState<unknown>(null);
  const path = `/v1/webhook_endpoints/${encodeURIComponent(id)}`;

  usePoll(
    async (signal) => {
      try {
        setEndpoint(await apiJson<Endpoint>(path, { key: apiKey, signal }));
        const page = await apiJson<ListPage<Delivery>>(`${path}/deliveries?limit=100`, { key: apiKey, signal });
        setDeliveries(page.data ?? []);
        setError(null);
      } catch (err) {
        if (!isAbort(err)) setError(err);
        throw err;
      }
    },
    3000,
    [path, apiKey],
  );

  return (
    <>
      <ErrorNotice error={error} title="Could not load the deliveries" />
      {endpoint ? (
        <dl className="facts">
          <dt>URL</dt>
          <dd>
            <code>{endpoint.url}</code>
          </dd>
          <dt>Events</dt>
          <dd>{endpoint.events.join(", ")}</dd>
          <dt>Status</dt>
          <dd>
            <StatusBadge status={endpoint.status} />
            {endpoint.disabled_reason ? ` ${endpoint.disabled_reason}` : ""}
          </dd>
        </dl>
      ) : null}
      {deliveries === null && !error ? <p aria-busy="true">Loading deliveries…</p> : null}
      {deliveries !== null && deliveries.length === 0 ? (
        <p className="notice" data-testid="no-deliveries">
          Nothing sent yet: a delivery appears here when a job, response or batch of this key ends in one of the
          endpoint&apos;s events.
        </p>
      ) : null}
      {deliveries && deliveries.length > 0 ? (
        <div className="table-wrap">
          <table className="jobs" data-testid="deliveries-table">
            <caption className="visually-hidden">Deliveries, newest first</caption>
            <thead>
              <tr>
                <th scope="col">Event id</th>
                <th scope="col">Type</th>
                <th scope="col">Status</th>
                <th scope="col">Status code</th>
                <th scope="col">Attempts</th>
                <th scope="col">Last tried</th>
                <th scope="col">Next retry</th>
              </tr>
            </thead>
            <tbody>
              {deliveries.map((d) => (
                <tr key={d.id} data-testid="delivery-row" data-delivery-id={d.id}>
                  <td data-label="Event id">
                    <code>{d.id}</code>
                  </td>
                  <td data-label="Type">
                    <code>{d.type}</code>
                  </td>
                  <td data-label="Status">
                    <StatusBadge status={d.status} testId="delivery-status" />
                  </td>
                  <td data-label="Status code">
                    <span className="wrap-anywhere" data-testid="delivery-code">
                      {d.last_status_code ?? "-"}
                      {d.last_error ? <span className="muted small"> {d.last_error}</span> : null}
                    </span>
                  </td>
                  <td data-label="Attempts">{d.attempts}</td>
                  <td data-label="Last tried">{formatTime(lastAttemptAt(d) ?? d.created_at)}</td>
                  <td data-label="Next retry" data-testid="delivery-next">
                    {d.status === "pending" && d.next_attempt_at ? formatTime(d.next_attempt_at) : "-"}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      ) : null}
    </>
  );
}
