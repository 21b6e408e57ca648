"""Soak: the repeated-kill scenario for N rounds (JSON on stdout).

Each round submits `--jobs` slow debug/echo jobs (each its own text) and SIGKILLs the
llm worker `--kills` times while they run, starting a fresh one after each kill, as
tests/chaos/test_worker_kills.py does once. Then it waits for every job to end.

Printed per round, one JSON line as it ends: jobs lost (not succeeded), duplicated
(more than one `done` event in the job's stream), wrong (output text not the job's
own), retried (attempts > 1); and for each kill, how many jobs the killed worker was
running, and the milliseconds from the kill to the last of them being requeued (its
lease lapsed, found by the reconciler), and to the first and the last of them running
again on the next worker (a requeued job waits behind the round's backlog). Last, a
summary line over all rounds.

Not in `make test` nor `make bench`: 10 rounds take 10 to 15 minutes on 2 cores.

    python bench/soak.py [--rounds 10] [--jobs 200] [--kills 5] [--words 12]
                         [--delay-ms 100] [--concurrency 16] [--postgres URL]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import redis
from sqlalchemy import create_engine, text

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.stack import BenchStack  # noqa: E402
from common.events import decode, events_key  # noqa: E402
from tests.conftest import FAST_ENV  # noqa: E402


def prompt(rnd: int, i: int, words: int) -> str:
    return f"round {rnd} job {i} says " + " ".join(f"r{rnd}j{i}w{k}" for k in range(words))


class Soak:
    def __init__(self, stack: BenchStack, args: argparse.Namespace):
        self.stack = stack
        self.args = args
        self.engine = create_engine(stack.settings.sync_database_url)
        self.redis = redis.Redis.from_url(stack.redis.url)
        self.client = httpx.Client(base_url=stack.url, timeout=60,
                                   headers={"Authorization": f"Bearer {stack.key}"})
        self.worker = stack.start_worker("llm", args.concurrency)

    def sql(self, query: str, **params):
        with self.engine.connect() as conn:
            return conn.execute(text(query), params).all()

    def submit(self, rnd: int) -> dict[str, str]:
        """The round's jobs: id -> prompt."""
        def one(i: int) -> tuple[str, str]:
            body = {"model": "debug/echo", "input": {"prompt": prompt(rnd, i, self.args.words)},
                    "params": {"delay_ms": self.args.delay_ms}, "metadata": {"round": str(rnd)}}
            resp = self.client.post("/v1/jobs", json=body)
            resp.raise_for_status()
            return resp.json()["id"], body["input"]["prompt"]

        with ThreadPoolExecutor(8) as pool:
            return dict(pool.map(one, range(self.args.jobs)))

    def unfinished(self, ids: list[str]) -> int:
        return self.sql("SELECT count(*) FROM jobs WHERE id = ANY(:ids) AND status NOT IN "
                        "('succeeded','failed','cancelled','expired')", ids=ids)[0][0]

    def kill(self) -> dict:
        """SIGKILL the worker, noting what it was running; start the next one."""
        pid = self.worker.pid
        running = self.sql("SELECT id, attempts FROM jobs WHERE status = 'running' "
                           "AND worker_id LIKE :w", w=f"%:{pid}:%")
        self.worker.send_signal(signal.SIGKILL)
        killed_at = time.time()
        self.worker.wait(10)
        self.worker = self.stack.start_worker("llm", self.args.concurrency)
        return {"at": killed_at, "running": dict(running)}

    def recovery(self, kill: dict) -> dict:
        """From the kill to each of its jobs requeued, and running again: the last."""
        requeued: list[float] = []
        restarted: list[float] = []
        for job_id, attempt in kill["running"].items():
            statuses = [(int(entry_id.decode().split("-")[0]) / 1000 - kill["at"], data)
                        for entry_id, fields in self.redis.xrange(events_key(job_id))
                        for type_, data in [decode(fields)] if type_ == "status"]
            requeued += [after for after, data in statuses
                         if after >= 0 and data.get("requeued")][:1]
            restarted += [after for after, data in statuses if after >= 0
                          and data.get("status") == "running"
                          and data.get("attempt") == attempt + 1][:1]

        def ms(times: list[float], pick) -> int | None:
            return round(pick(times) * 1000) if times else None

        return {"killed_running": len(kill["running"]), "requeued": len(requeued),
                "requeued_ms_max": ms(requeued, max), "running_again": len(restarted),
                "running_again_ms_first": ms(restarted, min),
                "running_again_ms_max": ms(restarted, max)}

    def round(self, rnd: int) -> dict:
        jobs = self.submit(rnd)
        ids = list(jobs)
        kills = []
        started = time.monotonic()
        for _ in range(self.args.kills):
            # Wait for this worker to be running jobs of the round, and for the last
            # kill's requeues to be due (a lease), so that each kill finds its own.
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not self.sql(
                    "SELECT 1 FROM jobs WHERE status = 'running' AND worker_id LIKE :w "
                    "AND id = ANY(:ids) LIMIT 1", w=f"%:{self.worker.pid}:%", ids=ids):
                time.sleep(0.1)
            if kills:
                time.sleep(max(0.0, kills[-1]["at"] + 4 - time.time()))
            if not self.unfinished(ids):
                break
            kills.append(self.kill())
        deadline = time.monotonic() + self.args.finish_timeout_s
        while self.unfinished(ids) and time.monotonic() < deadline:
            time.sleep(0.2)
        return self.report(rnd, jobs, kills, time.monotonic() - started)

    def report(self, rnd: int, jobs: dict[str, str], kills: list[dict], took_s: float) -> dict:
        rows = {r[0]: r for r in self.sql(
            "SELECT id, status, attempts, output FROM jobs WHERE id = ANY(:ids)", ids=list(jobs))}
        lost, duplicated, wrong, retried = [], [], [], 0
        for job_id, text_ in jobs.items():
            _, status, attempts, output = rows[job_id]
            retried += attempts > 1
            if status != "succeeded":
                lost.append(f"{job_id}:{status}:{attempts}")
            elif (output or {}).get("text") != text_:
                wrong.append(job_id)
            types = [decode(f)[0] for _, f in self.redis.xrange(events_key(job_id))]
            if types.count("done") > 1:
                duplicated.append(job_id)
        return {"round": rnd, "jobs": len(jobs), "kills": len(kills), "lost": len(lost),
                "duplicated": len(duplicated), "wrong_text": len(wrong), "retried": retried,
                "took_s": round(took_s, 1), "after_kills": [self.recovery(k) for k in kills],
                **({"lost_jobs": lost[:10]} if lost else {})}

    def close(self) -> None:
        self.client.close()
        self.engine.dispose()


def summary(rounds: list[dict]) -> dict:
    after = [k for r in rounds for k in r["after_kills"]]

    def spread(key: str) -> dict:
        values = sorted(k[key] for k in after if k[key] is not None)
        return {"n": len(values), "missing": len(after) - len(values),
                "min": values[0] if values else None,
                "median": values[len(values) // 2] if values else None,
                "max": values[-1] if values else None}

    return {"summary": True, "rounds": len(rounds),
            **{k: sum(r[k] for r in rounds) for k in
               ("jobs", "kills", "lost", "duplicated", "wrong_text", "retried")},
            **{key: spread(key) for key in
               ("requeued_ms_max", "running_again_ms_first", "running_again_ms_max")}}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--words", type=int, default=12)
    parser.add_argument("--delay-ms", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--finish-timeout-s", type=float, default=180)
    parser.add_argument("--postgres", default=os.environ.get(
        "DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"))
    args = parser.parse_args()
    # Leases and the reconciler as the chaos tests run them (a requeue within seconds of
    # a kill; the default lease is 10 s), and no request limit.
    stack = BenchStack(postgres_url=args.postgres, env=FAST_ENV)
    try:
        stack.start_api()
        soak = Soak(stack, args)
        rounds = []
        for rnd in range(1, args.rounds + 1):
            rounds.append(soak.round(rnd))
            print(json.dumps(rounds[-1]), flush=True)
        print(json.dumps(summary(rounds)), flush=True)
        soak.close()
    finally:
        stack.close()


if __name__ == "__main__":
    main()
