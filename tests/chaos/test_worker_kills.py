"""300 slow jobs while the llm worker is SIGKILLed five times: none is lost, each runs
to one stored result with its own text. Reports the time from a kill to the requeue."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import redis
from sqlalchemy import create_engine, text

from common.events import decode, events_key
from tests.conftest import REPO, wait_until

N_JOBS = 300
KILLS = 5


def prompt(i: int) -> str:
    return f"job {i} says " + " ".join(f"w{i}-{k}" for k in range(4))


def stuck_report(stack, engine) -> str:
    """What is left unfinished, and where its messages are, for a failure message."""
    with engine.connect() as conn:
        stuck = conn.execute(text(
            "SELECT id, status, attempts, published_at, lease_expires_at, worker_id "
            "FROM jobs WHERE status NOT IN ('succeeded')")).all()
    r = redis.Redis.from_url(stack.redis_url)
    held = {k: r.smembers(k) for k in r.scan_iter(match="monkey:held:*")}
    workers = list(r.scan_iter(match="monkey:worker:*"))
    return (f"stuck: {len(stuck)} {stuck[:10]} held={held} workers={workers} "
            f"llen={r.llen('llm')} unacked={r.hlen('unacked')}\n"
            f"{[(i, r.xrange(events_key(i))[-3:]) for i, *_ in stuck[:3]]}"
            f"\n{stack.logs()[-3000:]}")


def test_jobs_survive_repeated_worker_kills(make_stack):
    stack = make_stack("postgres")
    worker = stack.start_worker("llm", concurrency=32)
    client = stack.client()
    with ThreadPoolExecutor(8) as pool:
        jobs = list(pool.map(
            lambda i: stack.submit(client, input={"prompt": prompt(i)},
                                   params={"delay_ms": 60}),
            range(N_JOBS),
        ))
    ids = [j["id"] for j in jobs]
    engine = create_engine(stack.settings.sync_database_url)

    def finished() -> int:
        with engine.connect() as conn:
            return conn.execute(text("SELECT count(*) FROM jobs WHERE status IN "
                                     "('succeeded','failed','cancelled','expired')")).scalar()

    def until(check, timeout: float, what: str) -> None:
        try:
            wait_until(check, timeout, what, interval=0.2)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{stuck_report(stack, engine)}") from None

    kill_times = []
    for _ in range(KILLS):
        before = finished()
        until(lambda b=before: finished() >= min(N_JOBS, b + 15), 60, "progress")
        # Kills at least 4 s apart, so each requeue (lease 3 s) maps to the kill before it.
        if kill_times:
            until(lambda: time.time() * 1000 - kill_times[-1] > 4000, 10, "spacing")
        stack.kill(worker)
        kill_times.append(time.time() * 1000)
        worker = stack.start_worker("llm", concurrency=32)

    until(lambda: finished() == N_JOBS, 120, "all jobs finished")

    with engine.connect() as conn:
        rows = conn.execute(text("SELECT id, status, attempts, output FROM jobs")).all()
    engine.dispose()
    assert len(rows) == N_JOBS
    by_id = {r[0]: r for r in rows}
    lost = [i for i in ids if by_id[i][1] != "succeeded"]
    assert not lost, f"{len(lost)} jobs did not succeed: {[by_id[i][1:3] for i in lost][:5]}"
    for n, job_id in enumerate(ids):
        output = by_id[job_id][3]
        output = json.loads(output) if isinstance(output, str) else output
        assert output["text"] == prompt(n)

    r = redis.Redis.from_url(stack.redis_url)
    requeue_ms = []
    missing_done = []
    for job_id in ids:
        events = r.xrange(events_key(job_id))
        types = [t for t, _ in (decode(f) for _, f in events)]
        assert types.count("done") <= 1, (job_id, types)
        if "done" not in types:  # killed between its database write and its event
            missing_done.append(job_id)
        for entry_id, fields in events:
            t, data = decode(fields)
            if t == "status" and data.get("requeued"):
                at = int(entry_id.decode().split("-")[0])
                kill = max((k for k in kill_times if k <= at), default=None)
                if kill is not None:
                    requeue_ms.append(at - kill)
    # The SSE stream still ends with `done`, built from the database.
    for job_id in missing_done:
        assert stack.events(job_id)[-1][1] == "done"
    retried = sum(1 for r_ in rows if r_[2] > 1)
    report = {
        "jobs": N_JOBS, "kills": KILLS, "lost": len(lost), "retried_jobs": retried,
        "streams_without_done_event": len(missing_done),
        "requeue_after_kill_ms": {
            "n": len(requeue_ms),
            "min": min(requeue_ms, default=None), "max": max(requeue_ms, default=None),
            "median": sorted(requeue_ms)[len(requeue_ms) // 2] if requeue_ms else None,
        },
    }
    out = REPO / "artifacts" / "chaos"
    out.mkdir(parents=True, exist_ok=True)
    Path(out / "worker_kills.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report))
    assert retried > 0  # the kills really hit running jobs
    # lease 3 s, heartbeat 0.5 s, reconciler 0.25 s: a requeue comes within seconds.
    assert report["requeue_after_kill_ms"]["max"] < 10_000
