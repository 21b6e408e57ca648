"use client";

// The jobs list: GET /v1/jobs with a search (`q`: id, input text, batch custom_id) and
// filters (status, kind, model, priority, batch) kept in the address, so a filtered list can be bookmarked, shared and reached with Back;
// cursor pages (newest first, `after` = the last id of the page before), refreshed
// every two seconds.

import Link from "next/link";
import { usePathname, useRouter, useSearchParams } from "next/navigation";
import { Suspense, useCallback, useEffect, useState } from "react";
import ErrorNotice from "@/components/ErrorNotice";
import RequireKey from "@/components/RequireKey";
import StatusBadge from "@/components/StatusBadge";
import { apiJson, isAbort } from "@/lib/api";
import { formatMs, formatTime } from "@/lib/format";
import { useTitle } from "@/lib/title";
import { JOB_STATUSES, type Job, type ListPage } from "@/lib/types";

const REFRESH_MS = 2000;
const PAGE_SIZES = [10, 20, 50, 100];

const FILTERS = ["q", "status", "kind", "model", "priority", "batch"] as const;
type Filter = (typeof FILTERS)[number];

export default function JobsPage() {
  useTitle("Jobs");
  return (
    <section aria-labelledby="jobs-title">
      <h1 id="jobs-title">Jobs</h1>
      <Suspense fallback={<p aria-busy="true">Loading…</p>}>
        <RequireKey>{(key) => <JobsList apiKey={key} />}</RequireKey>
      </Suspense>
    </section>
  );
}

function useFilters(): [Record<Filter, string>, (name: Filter, value: string) => void] {
  const params = useSearchParams();
  const router = useRouter();
  const pathname = usePathname();
  const values = Object.fromEntries(FILTERS.map((f) => [f, params.get(f) ?? ""])) as Record<Filter, string>;
  const set = useCallback(
    (name: Filter, value: string) => {
      const next = new URLSearchParams(params.toString());
      if (value) next.set(name, value);
      else next.delete(name);
      const q = next.toString();
      router.replace(q ? `${pathname}?${q}` : pathname, { scroll: false });
    },
    [params, router, pathname],
  );
  return [values, set];
}

function preview(job: Job): string {
  const input = job.input ?? {};
  const text =
    input.prompt ??
    input.messages?.map((m) => m.content).join(" ") ??
    input.texts?.join(" | ") ??
    "";
  return text.length > 80 ? `${text.slice(0, 80)}…` : text;
}

function JobsList({ apiKey }: { apiKey: string }) {
  const [filters, setFilter] = useFilters();
  const { q: search, status, kind, model, priority, batch } = filters;
  const filtered = FILTERS.some((f) => filters[f]);
  const [limit, setLimit] = useState(20);
  const [live, setLive] = useState(true);
  // cursors[i] is the `after` of page i; page 0 has none.
  const [cursors, setCursors] = useState<string[]>([""]);
  const [page, setPage] = useState<ListPage<Job> | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [updatedAt, setUpdatedAt] = useState<number | null>(null);
  const after = cursors[cursors.length - 1];

  const load = useCallback(
    async (signal: AbortSignal) => {
      const q = new URLSearchParams({ limit: String(limit) });
      if (search) q.set("q", search);
      if (status) q.set("status", status);
      if (kind) q.set("kind", kind);
      if (model) q.set("model", model);
      if (priority) q.set("priority", priority);
      if (batch) q.set("batch_id", batch);
      if (after) q.set("after", after);
      try {
        const res = await apiJson<ListPage<Job>>(`/v1/jobs?${q}`, { key: apiKey, signal });
        setPage(res);
        setError(null);
        setUpdatedAt(Date.now());
      } catch (err) {
        if (!isAbort(err)) setError(err);
      }
    },
    [apiKey, search, status, kind, model, priority, batch, limit, after],
  );

  useEffect(() => {
    const controller = new AbortController();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const tick = async () => {
      await load(controller.signal);
      if (live && !controller.signal.aborted) timer = setTimeout(tick, REFRESH_MS);
    };
    void tick();
    return () => {
      controller.abort();
      clearTimeout(timer);
    };
  }, [load, live]);

  function resetPages() {
    setCursors([""]);
  }

  function change(name: Filter, value: string) {
    setFilter(name, value);
    resetPages();
  }

  const rows = Array.isArray(page?.data) ? page.data : [];
  const lastId = page?.last_id ?? rows[rows.length - 1]?.id;

  return (
    <>
      <form className="filters" onSubmit={(e) => e.preventDefault()} aria-label="Filters">
        <TextFilter id="filter-q" label="Search" type="search" value={search} placeholder="id, prompt or custom_id"
          onChange={(v) => change("q", v)} wide />
        <SelectFilter id="filter-status" label="Status" value={status} onChange={(v) => change("status", v)}
          options={JOB_STATUSES.map((x) => [x, x])} />
        <SelectFilter id="filter-kind" label="Kind" value={kind} onChange={(v) => change("kind", v)}
          options={[["generate", "generate"], ["embed", "embed"]]} />
        <SelectFilter id="filter-priority" label="Priority" value={priority} onChange={(v) => change("priority", v)}
          options={[["interactive", "interactive (no batch lines)"], ["batch", "batch"]]} />
        <TextFilter id="filter-model" label="Model" value={model} placeholder="e.g. debug/echo"
          onChange={(v) => change("model", v)} />
        <TextFilter id="filter-batch" label="Batch" value={batch} placeholder="batch_…"
          onChange={(v) => change("batch", v)} />
        <div className="field">
          <label htmlFor="page-size">Per page</label>
          <select
            id="page-size"
            value={limit}
            onChange={(e) => {
              setLimit(Number(e.target.value));
              resetPages();
            }}
          >
            {PAGE_SIZES.map((n) => (
              <option key={n} value={n}>
                {n}
              </option>
            ))}
          </select>
        </div>
        <div className="field inline">
          <input id="live" type="checkbox" checked={live} onChange={(e) => setLive(e.target.checked)} />
          <label htmlFor="live">Refresh every {REFRESH_MS / 1000} s</label>
        </div>
      </form>

      <ErrorNotice error={error} title="Could not load the jobs" />
      {updatedAt ? (
        <p className="muted small" aria-live="off">
          Updated {new Date(updatedAt).toLocaleTimeString()}
        </p>
      ) : null}

      {page === null && !error ? <p aria-busy="true">Loading jobs…</p> : null}
      {page !== null && rows.length === 0 ? (
        <p className="notice" data-testid="no-jobs">
          No jobs{filtered ? " match these filters" : " yet"}
          {search ? " (the search looks through your newest 5,000 jobs)" : ""}. <Link href="/">Submit one</Link>.
        </p>
      ) : null}
      {rows.length > 0 ? (
        <div className="table-wrap">
          <table className="jobs" data-testid="jobs-table">
            <caption className="visually-hidden">Jobs, newest first</caption>
            <thead>
              <tr>
                <th scope="col">Job</th>
                <th scope="col">Status</th>
                <th scope="col">Model</th>
                <th scope="col">Priority</th>
                <th scope="col">Batch</th>
                <th scope="col">Created</th>
                <th scope="col">Run time</th>
                <th scope="col">Input</th>
              </tr>
            </thead>
            <tbody>
              {rows.map((job) => (
                <tr key={job.id} data-testid="job-row" data-job-id={job.id}>
                  <td data-label="Job">
                    <Link href={`/job/?id=${encodeURIComponent(job.id)}`}>
                      <code>{job.id}</code>
                    </Link>
                  </td>
                  <td data-label="Status">
                    <StatusBadge status={job.status} testId="job-row-status" />
                  </td>
                  <td data-label="Model">{job.model}</td>
                  <td data-label="Priority">{job.priority ?? "-"}</td>
                  <td data-label="Batch">
                    {job.batch_id ? (
                      <Link href={`/batch/?id=${encodeURIComponent(job.batch_id)}`}>
                        <code>{job.batch_id}</code>
                      </Link>
                    ) : (
                      "-"
                    )}
                  </td>
                  <td data-label="Created">{formatTime(job.created_at)}</td>
                  <td data-label="Run time">{formatMs(job.metrics?.run_ms)}</td>
                  <td data-label="Input" className="preview">
                    {preview(job)}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      ) : null}

      <nav className="pager" aria-label="Pages">
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
    </>
  );
}

// A text filter applies when the field is left or Enter is pressed, not per keystroke.
function TextFilter(props: {
  id: string;
  label: string;
  value: string;
  placeholder: string;
  onChange: (v: string) => void;
  type?: "text" | "search";
  wide?: boolean;
}) {
  const [text, setText] = useState(props.value);
  useEffect(() => setText(props.value), [props.value]);
  const apply = () => {
    if (text.trim() !== props.value) props.onChange(text.trim());
  };
  return (
    <div className={props.wide ? "field wide" : "field"}>
      <label htmlFor={props.id}>{props.label}</label>
      <input
        id={props.id}
        type={props.type ?? "text"}
        autoComplete="off"
        spellCheck={false}
        placeholder={props.placeholder}
        value={text}
        onChange={(e) => setText(e.target.value)}
        onBlur={apply}
        onKeyDown={(e) => {
          if (e.key === "Enter") apply();
        }}
      />
    </div>
  );
}

function SelectFilter(props: {
  id: string;
  label: string;
  value: string;
  options: [string, string][];
  onChange: (v: string) => void;
}) {
  return (
    <div className="field">
      <label htmlFor={props.id}>{props.label}</label>
      <select id={props.id} value={props.value} onChange={(e) => props.onChange(e.target.value)}>
        <option value="">all</option>
        {props.options.map(([value, text]) => (
          <option key={value} value={value}>
            {text}
          </option>
        ))}
      </select>
    </div>
  );
}
