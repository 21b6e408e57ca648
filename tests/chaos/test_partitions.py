"""Partitions between hosts: a worker (or the API) on another host, in a network
namespace, reaching Postgres and Redis over links the test cuts and heals
(tests/chaos/hosts.py: packets dropped, connections hanging, nothing reset).

Whatever is cut, no job is lost, none has two results, a superseded attempt's writes
are refused, and the cut-off process works again once the link is back.
"""

from __future__ import annotations

import json
import threading
import time

import httpx
import redis
from sqlalchemy import create_engine, text

from common.events import decode, events_key
from tests.conftest import streamed_text, wait_until


def prompt(tag: str, i: int, words: int) -> str:
    return f"{tag} {i} " + " ".join(f"{tag}{i}w{k}" for k in range(words))


def event_types(stack, job_id: str) -> list[str]:
    r = redis.Redis.from_url(stack.redis_url)
    return [decode(fields)[0] for _, fields in r.xrange(events_key(job_id))]


def rows(stack, ids: list[str]) -> dict[str, dict]:
    engine = create_engine(stack.settings.sync_database_url)
    try:
        with engine.connect() as conn:
            found = conn.execute(text(
                "SELECT id, status, attempts, output, worker_id FROM jobs WHERE id = ANY(:ids)"),
                {"ids": ids}).mappings().all()
    finally:
        engine.dispose()
    return {r["id"]: dict(r) for r in found}


def log_records(proc) -> list[dict]:
    out = []
    for line in proc.log_path.read_text(errors="replace").splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:  # Celery's banner and other plain lines
            continue
    return out


def through(host, stack) -> dict:
    """The environment of a process on `host`: Postgres and Redis over their links."""
    return {"DATABASE_URL": host.reach(stack.db.url, "pg"),
            "REDIS_URL": host.reach(stack.redis_url, "redis")}


def jobs_on_a_far_worker(stack, host, tag: str, *, words: int, delay_ms: int):
    """A worker on `host`, and four slow jobs it runs, each past its first token."""
    far = stack.start_worker("llm", concurrency=4, extra_env=through(host, stack),
                             wrap=host.wrap)
    jobs = [stack.submit(input={"prompt": prompt(tag, i, words)}, params={"delay_ms": delay_ms})
            for i in range(4)]
    wait_until(lambda: all("token" in event_types(stack, j["id"]) for j in jobs), 30,
               "jobs running on the far worker")
    return far, jobs


class Followers:
    """An SSE follower per job from its start, each keeping the text it was sent as a
    client does: a `running` status that says `restarted` starts the text again."""

    def __init__(self, stack, jobs: list[dict]):
        self.events: dict[str, list] = {}
        self.threads = [threading.Thread(target=self._follow, args=(stack, j["id"]))
                        for j in jobs]
        for t in self.threads:
            t.start()

    def _follow(self, stack, job_id: str) -> None:
        self.events[job_id] = stack.events(job_id, timeout=120)

    def texts(self) -> dict[str, str]:
        for t in self.threads:
            t.join(120)
        return {job_id: streamed_text(events) for job_id, events in self.events.items()}


def assert_one_result_each(stack, jobs: list[dict], *, attempts: int | None = None) -> dict:
    """Every job succeeded with its own text and one `done` event; its SSE stream ends
    with `done`. Returns the rows."""
    found = rows(stack, [j["id"] for j in jobs])
    for job in jobs:
        row = found[job["id"]]
        assert row["status"] == "succeeded", (job["id"], row)
        assert row["output"]["text"] == job["input"]["prompt"]
        if attempts is not None:
            assert row["attempts"] == attempts, (job["id"], row)
        assert event_types(stack, job["id"]).count("done") <= 1
        assert stack.events(job["id"])[-1][1] == "done"
    return found


def assert_works_again(stack, far, near, tag: str) -> None:
    """With the worker that stayed connected gone, the one cut off runs new jobs."""
    stack.kill(near, 15)  # SIGTERM: it drains and exits
    jobs = [stack.submit(input={"prompt": prompt(tag, i, 3)}) for i in range(4)]
    for job in jobs:
        stack.wait(job["id"], timeout=60)
    found = assert_one_result_each(stack, jobs, attempts=1)
    assert all(f":{far.pid}:" in row["worker_id"] for row in found.values()), found


def test_a_worker_cut_from_postgres_mid_job(make_stack, make_host):
    """The worker keeps Redis and loses Postgres while its jobs run: their leases lapse,
    another worker runs them again; once the link is back, the cut-off attempts' results
    are refused and the worker takes new jobs."""
    stack = make_stack("postgres")
    host = make_host()
    # Long enough that the far attempts still stream when the near ones start.
    far, jobs = jobs_on_a_far_worker(stack, host, "pg", words=60, delay_ms=100)
    streams = Followers(stack, jobs)

    host.cut("pg")
    near = stack.start_worker("llm", concurrency=4)
    for job in jobs:
        stack.wait(job["id"], timeout=60)
    done = assert_one_result_each(stack, jobs, attempts=2)
    # What the followers were sent, restarts applied, is each job's own text: none of
    # the tokens the far attempt kept streaming after the near one began.
    assert streams.texts() == {j["id"]: j["input"]["prompt"] for j in jobs}
    envelopes = {j["id"]: stack.get(j["id"]) for j in jobs}
    assert far.poll() is None

    host.heal("pg")
    healed = time.time()

    def refused() -> set[str]:
        return {r.get("job_id") for r in log_records(far)
                if r["msg"].startswith("result discarded") and r.get("attempt") == 1}

    # The far attempts finished their runs during the cut; their ends, held up since,
    # reach the database now and are refused by the attempt fence.
    wait_until(lambda: refused() >= set(done), 60, "the far worker's results refused", far)
    refusals = [r["ts"] for r in log_records(far) if r["msg"].startswith("result discarded")]
    assert min(refusals) >= healed
    print(json.dumps({"refused_after_heal_s": round(max(refusals) - healed, 1)}))
    assert {j["id"]: stack.get(j["id"]) for j in jobs} == envelopes
    assert_works_again(stack, far, near, "pg-after")


def test_a_worker_cut_from_redis_mid_job(make_stack, make_host):
    """The worker keeps Postgres and loses Redis while its jobs run: it keeps their
    leases and writes their results (their events are best effort), and once the link
    is back it consumes again."""
    stack = make_stack("postgres")
    host = make_host()
    far, jobs = jobs_on_a_far_worker(stack, host, "rd", words=20, delay_ms=150)

    host.cut("redis")
    cut = time.monotonic()
    near = stack.start_worker("llm", concurrency=4)
    for job in jobs:
        stack.wait(job["id"], timeout=90)
    ran_s = time.monotonic() - cut
    host.heal("redis")
    assert far.poll() is None
    found = assert_one_result_each(stack, jobs, attempts=1)
    assert all(f":{far.pid}:" in row["worker_id"] for row in found.values()), found
    print(json.dumps({"jobs_finished_during_redis_cut_s": round(ran_s, 1)}))
    assert_works_again(stack, far, near, "rd-after")


def test_the_api_cut_from_redis_mid_submit(make_stack, make_host):
    """The API (and its control process) on another host loses Redis while submits
    stream in: every submit is answered 202, and once the link is back every job
    runs, once."""
    stack = make_stack("postgres", api=False)
    host = make_host()
    # The request limit on, as deployed: it asks Redis too (failing open).
    stack.start_api({**through(host, stack), "MONKEY_RATE_LIMIT_PER_S": "10000"},
                    wrap=host.wrap, host=host.ip)
    stack.start_worker("llm", concurrency=8)
    client = stack.client(timeout=60)
    submitted: list[tuple[dict, float]] = []
    failures: list[str] = []
    stop = threading.Event()

    def submit_loop() -> None:
        n = 0
        while not stop.is_set():
            body = {"model": "debug/echo", "input": {"prompt": prompt("api", n, 3)}}
            t = time.monotonic()
            try:
                resp = client.post("/v1/jobs", json=body)
            except httpx.HTTPError as exc:
                failures.append(f"{n}: {exc!r}")
            else:
                if resp.status_code == 202:
                    submitted.append((resp.json(), time.monotonic() - t))
                else:
                    failures.append(f"{n}: {resp.status_code} {resp.text}")
            n += 1
            stop.wait(0.05)

    submitter = threading.Thread(target=submit_loop)
    submitter.start()
    try:
        wait_until(lambda: len(submitted) >= 10, 30, "submits before the cut")
        host.cut("redis")
        before = len(submitted)
        # Until sends to the broker have failed (waited out their timeout), and then
        # some more submits.
        wait_until(lambda: b"broker unavailable" in stack.api_proc.log_path.read_bytes(),
                   60, "a failed publish")
        failed_at = len(submitted)
        wait_until(lambda: len(submitted) >= failed_at + 10, 60, "submits during the cut")
        during = len(submitted)
        host.heal("redis")
        healed = time.monotonic()
        wait_until(lambda: len(submitted) >= during + 10, 60, "submits after the heal")
    finally:
        stop.set()
        submitter.join(60)
    assert not failures, failures[:5]

    jobs = [job for job, _ in submitted]
    for job in jobs:
        stack.wait(job["id"], timeout=60)
    recovered_s = time.monotonic() - healed
    assert_one_result_each(stack, jobs, attempts=1)
    slowest = max(latency for _, latency in submitted[before:during])
    print(json.dumps({"submits": len(jobs), "during_cut": during - before,
                      "slowest_submit_during_cut_s": round(slowest, 2),
                      "all_done_after_heal_s": round(recovered_s, 1)}))
