"""Fair share between keys on the real stack: one key's flood of interactive jobs does not
starve another key's job, weights change the keys' shares of the workers, and the cap of
running jobs per key holds under a flood from two API processes and two workers. Every
job ends once (api/services/fair.py; the batch window alone: test_batch_fairness.py)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor

import httpx
import psycopg

from common.keys import create_api_key
from monkey.embedded import free_port
from tests.api.test_batches import chat_line, sdk, start_batch, wait_batch
from tests.conftest import wait_until


def key(stack, name: str, weight: float = 1.0) -> str:
    return asyncio.run(create_api_key(stack.settings, name, weight))


def submit_many(stack, client: httpx.Client, n: int, **body) -> list[str]:
    def one(_: int) -> str:
        return stack.submit(client, **body)["id"]

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(one, range(n)))


def jobs_of(stack, owner_name: str) -> list[tuple]:
    """(status, attempts, started_at) of every job of the key named so."""
    with psycopg.connect(stack.db.url) as conn:
        return conn.execute(
            "SELECT j.status, j.attempts, j.started_at FROM jobs j JOIN api_keys k "
            "ON k.id = j.owner_id WHERE k.name = %s", (owner_name,)).fetchall()


def all_succeeded_once(stack, name: str, n: int) -> None:
    """Every job of the key ended succeeded, in one attempt (none lost, none run twice)."""
    def done() -> bool:
        return sum(s == "succeeded" for s, _, _ in jobs_of(stack, name)) == n

    wait_until(done, 180, f"{n} jobs of {name} succeeded", interval=0.5)
    found = jobs_of(stack, name)
    assert len(found) == n and {(s, a) for s, a, _ in found} == {("succeeded", 1)}


def test_one_keys_interactive_flood_does_not_starve_another_keys_job(make_stack):
    stack = make_stack("postgres", env={"MONKEY_INTERACTIVE_WINDOW": "20"})
    stack.start_worker("llm", concurrency=4)
    flood = stack.client(key(stack, "flood"))
    other = stack.client(key(stack, "other"))
    # 600 jobs of about 100 ms on four threads: 15 s of work, submitted in a few.
    submit_many(stack, flood, 600, input={"prompt": "one two three"},
                params={"delay_ms": 30})
    job = stack.submit(other, input={"prompt": "mine"})
    done = stack.wait(job["id"], timeout=60, client=other)
    assert done["status"] == "succeeded"
    started = done["started_at"].replace("Z", "+00:00")
    after = sum(1 for status, _, at in jobs_of(stack, "flood")
                if at is None or at.isoformat() > started)
    print(f"\nthe flood's jobs not started when the other key's job started: {after} of 600")
    # First come, first served, it would have started after all 600 had.
    assert after >= 300, after
    all_succeeded_once(stack, "flood", 600)


def test_a_heavier_key_advances_faster(make_stack):
    stack = make_stack("postgres", env={"MONKEY_BATCH_WINDOW": "40",
                                        "MONKEY_BATCH_CHUNK_LINES": "8"})
    stack.start_worker("llm", concurrency=8)
    light, heavy = sdk(stack, key(stack, "light", 1)), sdk(stack, key(stack, "heavy", 3))
    lines = [chat_line(f"l{i}", "one two", delay_ms=10) for i in range(1500)]
    batches = [start_batch(light, lines), start_batch(heavy, lines)]
    clients = [light, heavy]
    samples: list[tuple[int, int]] = []

    def first_done() -> bool:
        counts = [c.batches.retrieve(b.id).request_counts.completed
                  for c, b in zip(clients, batches, strict=True)]
        samples.append((counts[0], counts[1]))
        return max(counts) >= 1500

    wait_until(first_done, 240, "a batch completed", interval=0.3)
    # While both were busy: from the first sample where both had lines done.
    both = [s for s in samples if min(s) > 0]
    (l0, h0), (l1, h1) = both[0], both[-1]
    ratio = (h1 - h0) / max(l1 - l0, 1)
    print(f"\nlines done while both ran, light and heavy key: {l1 - l0}, {h1 - h0} "
          f"(ratio {ratio:.2f}, weights 1 and 3)")
    assert h1 >= 1500 > l1  # the heavier key finished first
    assert 2.0 <= ratio <= 4.5, (ratio, samples)
    for client, batch in zip(clients, batches, strict=True):
        assert wait_batch(client, batch.id, timeout=240).request_counts.completed == 1500


def test_the_running_cap_per_key_holds_under_a_flood(make_stack):
    cap = 3
    stack = make_stack("postgres", env={"MONKEY_MAX_RUNNING_PER_KEY": str(cap),
                                        "MONKEY_INTERACTIVE_WINDOW": "50"})
    # Two API processes (each with its control process), two workers.
    second = free_port()
    stack.spawn("api-2", ["api", "--port", str(second)])
    stack.start_worker("llm", concurrency=8)
    stack.start_worker("llm", concurrency=8)
    wait_until(lambda: httpx.get(f"http://127.0.0.1:{second}/healthz").status_code == 200,
               30, "second API ready")
    names = ("capped", "other")
    keys = {name: key(stack, name) for name in names}
    peak: dict[str, int] = defaultdict(int)
    stop = threading.Event()

    def sample() -> None:
        with psycopg.connect(stack.db.url, autocommit=True) as conn:
            while not stop.is_set():
                for name, n in conn.execute(
                        "SELECT k.name, count(*) FROM jobs j JOIN api_keys k ON k.id = "
                        "j.owner_id WHERE j.status IN ('running', 'cancelling') "
                        "GROUP BY k.name"):
                    peak[name] = max(peak[name], n)
                time.sleep(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        # The capped key's batch (in chunks) and its interactive jobs through both APIs,
        # and another key's jobs alongside.
        batch = start_batch(sdk(stack, keys["capped"]),
                            [chat_line(f"c{i}", "one two", delay_ms=20) for i in range(120)])
        clients = [stack.client(keys["capped"]),
                   httpx.Client(base_url=f"http://127.0.0.1:{second}", timeout=30,
                                headers={"Authorization": f"Bearer {keys['capped']}"})]
        with ThreadPoolExecutor(3) as pool:
            floods = [pool.submit(submit_many, stack, c, 60, input={"prompt": "a b c"},
                                  params={"delay_ms": 20}) for c in clients]
            floods.append(pool.submit(submit_many, stack, stack.client(keys["other"]), 60,
                                      input={"prompt": "a b c"}, params={"delay_ms": 20}))
            for f in floods:
                f.result()
        done = wait_batch(sdk(stack, keys["capped"]), batch.id, timeout=180)
        assert done.request_counts.completed == 120
        all_succeeded_once(stack, "capped", 240)
        all_succeeded_once(stack, "other", 60)
    finally:
        stop.set()
        sampler.join(5)
    print(f"\npeak running jobs per key: {dict(peak)} (cap {cap})")
    assert peak["capped"] == cap and peak["other"] == cap
