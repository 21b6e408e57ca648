"""Webhooks: how long from a job's end to its signed event at a receiver, and what an
endpoint costs the job path (JSON out).

Starts its own stack (bench/stack.py: a private redis-server, SQLite or a fresh Postgres
database, the API with its control process, one llm worker) and a receiver on
127.0.0.1 that verifies every delivery's Standard Webhooks signature. Then:

1. `--jobs` echo jobs with no endpoint: each one's round trip (POST /v1/jobs with
   `Prefer: wait`, from submit to the finished job in the answer);
2. an endpoint for `job.succeeded`, and as many jobs again: the same round trips, and for
   each job the time from its `finished_at` (the row's end, the database's clock) to its
   event at the receiver (this machine's clock: one machine, one clock).

Deliveries run in the control process, never on a worker's thread or in the request,
so the round trips of 1 and 2 should match within noise.

    python bench/webhooks.py [--jobs 200] [--clients 8] [--postgres URL]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import httpx  # noqa: E402
from standardwebhooks.webhooks import Webhook  # noqa: E402

from bench.stack import BenchStack, percentiles  # noqa: E402
from monkey.embedded import free_port  # noqa: E402


class Receiver:
    """Takes deliveries, answers 200, and notes when each job's event arrived."""

    def __init__(self) -> None:
        self.port = free_port()
        self.arrived: dict[str, float] = {}  # job id -> arrival (epoch seconds)
        self.deliveries = 0
        self.bad_signatures = 0
        self.secret: str | None = None
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                at = time.time()
                body = self.rfile.read(int(self.headers["content-length"]))
                receiver.took(body, {k.lower(): v for k, v in self.headers.items()}, at)
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):  # quiet
                pass

        ThreadingHTTPServer.request_queue_size = 256
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def took(self, body: bytes, headers: dict, at: float) -> None:
        try:
            event = Webhook(self.secret).verify(body, headers) if self.secret else None
        except Exception:  # noqa: BLE001 - counted, the bench reports it
            event = None
        with self.lock:
            self.deliveries += 1
            if event is None:
                self.bad_signatures += 1
                return
            self.arrived.setdefault(event["data"]["id"], at)

    def close(self) -> None:
        self.server.shutdown()


def round_trips(http: httpx.Client, n: int, clients: int, tag: str) -> tuple[list[float], list]:
    """n echo jobs from `clients` threads, each waiting for its job: round trips (ms)
    and the finished jobs."""

    def one(i: int) -> tuple[float, dict]:
        t0 = time.perf_counter()
        r = http.post("/v1/jobs", headers={"Prefer": "wait=30"},
                      json={"model": "debug/echo", "input": {"prompt": f"{tag} {i} hello"}})
        ms = (time.perf_counter() - t0) * 1000
        if r.status_code != 200 or r.json()["status"] != "succeeded":
            raise RuntimeError(f"job {i}: {r.status_code} {r.text[:300]}")
        return ms, r.json()

    with ThreadPoolExecutor(clients) as pool:
        got = list(pool.map(one, range(n)))
    return [ms for ms, _ in got], [job for _, job in got]


def epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=200)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--postgres", metavar="URL", help="a Postgres admin URL (default SQLite)")
    args = ap.parse_args()

    stack = BenchStack(postgres_url=args.postgres, env={"MONKEY_WEBHOOK_ALLOW_PRIVATE": "1"})
    receiver = Receiver()
    try:
        stack.start_api()
        stack.start_worker("llm", 8)
        http = httpx.Client(base_url=stack.url, timeout=60,
                            headers={"Authorization": f"Bearer {stack.key}"})
        round_trips(http, 20, args.clients, "warm")  # connections, imports, caches
        plain, _ = round_trips(http, args.jobs, args.clients, "plain")

        made = http.post("/v1/webhook_endpoints", json={"url": receiver.url,
                                                        "events": ["job.succeeded"]})
        made.raise_for_status()
        receiver.secret = made.json()["secret"]
        hooked, jobs = round_trips(http, args.jobs, args.clients, "hooked")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with receiver.lock:
                if all(j["id"] in receiver.arrived for j in jobs):
                    break
            time.sleep(0.1)
        with receiver.lock:
            arrived = dict(receiver.arrived)
            deliveries, bad = receiver.deliveries, receiver.bad_signatures
        delays = [(arrived[j["id"]] - epoch(j["finished_at"])) * 1000
                  for j in jobs if j["id"] in arrived]
        print(json.dumps({
            "bench": "webhooks",
            "database": "postgres" if args.postgres else "sqlite",
            "jobs": args.jobs,
            "clients": args.clients,
            "job_end_to_webhook": percentiles(delays),
            "events_missing": sum(1 for j in jobs if j["id"] not in arrived),
            "deliveries": deliveries,
            "bad_signatures": bad,
            "round_trip_without_endpoint": percentiles(plain),
            "round_trip_with_endpoint": percentiles(hooked),
            "p50_ratio_with_to_without": round(
                percentiles(hooked)["p50_ms"] / percentiles(plain)["p50_ms"], 3),
        }, indent=2))
    finally:
        receiver.close()
        stack.close()


if __name__ == "__main__":
    main()
