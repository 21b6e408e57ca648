"use client";

// Shows an API failure as the server's message plus what to do about it.

import Link from "next/link";
import { API_BASE, ApiError, apiOrigin } from "@/lib/api";

function nextStep(err: ApiError): React.ReactNode {
  switch (err.status) {
    case 0:
      return (
        <>
          The Monkey Coder service did not answer. Check your connection, then try again in a minute: this page
          retries on its own where it can, and nothing you submitted is lost. If it goes on, the service is down or
          being restarted; tell whoever runs it.
          <details className="operator-hint">
            <summary>For the operator</summary>
            This page calls the API at <code>{apiOrigin()}</code>
            {API_BASE
              ? " (set by NEXT_PUBLIC_API_URL when the UI was built): is the API running there, and does it allow this page's origin (MONKEY_CORS_ORIGINS)?"
              : " (the page's own origin): is the API running and serving this UI?"}
          </details>
        </>
      );
    case 401:
    case 403:
      return (
        <>
          The API refused the key. <Link href="/key/">Enter a valid API key</Link> (create one with{" "}
          <code>monkey keys create --name NAME</code>).
        </>
      );
    case 404:
      return "It does not exist, or it belongs to another API key.";
    case 409:
      return "It conflicts with an earlier request (same Idempotency-Key, another body?).";
    case 413:
      return "The input is too large: shorten it or split it.";
    case 422:
      return /model/i.test(err.message)
        ? "Pick a model that is configured on this server."
        : "Check the values in the form.";
    case 429:
      return `Too many requests: wait${err.retryAfter ? ` ${err.retryAfter} s` : " a moment"} and try again.`;
    case 503:
      return `The service is busy or starting: try again${err.retryAfter ? ` in ${err.retryAfter} s` : " shortly"}.`;
    default:
      return err.status >= 500 ? "The server failed: its logs say why. Try again later." : null;
  }
}

export default function ErrorNotice({ error, title }: { error: unknown; title?: string }) {
  if (!error) return null;
  const err = error instanceof ApiError ? error : new ApiError(-1, "client", String(error));
  const step = err.status >= 0 ? nextStep(err) : null;
  return (
    <div className="notice error" role="alert" data-testid="error">
      <strong>{title ?? (err.status > 0 ? `Error ${err.status}` : "Error")}: </strong>
      <span data-testid="error-message">{err.message}</span>
      {step ? <p className="next-step">{step}</p> : null}
    </div>
  );
}
