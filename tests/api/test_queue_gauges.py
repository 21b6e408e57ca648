"""The queue gauges of the API's /metrics against what Redis and the database hold:
messages on the broker's lists, messages workers received but have not started
(what KEDA's redis scaler cannot see), running jobs; per queue and priority."""

from __future__ import annotations

import httpx
import redis
from prometheus_client.parser import text_string_to_metric_families

from common.constants import PRIORITY_SEP
from common.db import make_sync_engine
from tests.conftest import wait_until
from workers.runs import RunRegistry
from workers.supervisor import Supervisor


def gauges(url: str) -> dict:
    out = {}
    for fam in text_string_to_metric_families(httpx.get(f"{url}/metrics").text):
        for s in fam.samples:
            if s.name.startswith("monkey_queue_"):
                out[(s.name, s.labels.get("queue"), s.labels.get("priority"))] = s.value
    return out


def test_gauges_equal_the_lists_the_prefetch_and_the_running_jobs(make_stack):
    stack = make_stack("sqlite", env={"MONKEY_QUEUE_METRICS_TTL_S": "0"})
    r = redis.Redis.from_url(stack.redis_url)
    for i in range(5):
        stack.submit(input={"prompt": f"word {i}"})
    embeds = [stack.submit(model="local/all-MiniLM-L6-v2", kind="embed",
                           input={"texts": ["q"]}) for _ in range(2)]
    wait_until(lambda: r.llen("llm") == 5 and r.llen("gpu") == 2, 10, "messages published")
    g = gauges(stack.url)
    assert g[("monkey_queue_messages", "llm", "interactive")] == 5
    assert g[("monkey_queue_messages", "gpu", "interactive")] == 2
    assert g[("monkey_queue_messages", "llm", "batch")] == 0
    assert g[("monkey_queue_depth", "llm", "interactive")] == 5
    assert g[("monkey_queue_prefetched", "gpu", "interactive")] == 0

    # A worker that holds a gpu message it has not started (the supervisor's own
    # records: presence and held set): prefetched, while the list still counts the other.
    engine = make_sync_engine(stack.settings)
    sup = Supervisor(stack.settings, worker_id="test:1:gpu", queues=["gpu"], redis_client=r,
                     db=engine, runs=RunRegistry(), loaded_models=list)
    sup.beat()
    sup.hold(embeds[0]["id"])
    sup.sync_held()
    r.rpop("gpu")  # the message it received left the list
    g = gauges(stack.url)
    assert g[("monkey_queue_prefetched", "gpu", "interactive")] == 1
    assert g[("monkey_queue_messages", "gpu", "interactive")] == 1
    sup.stop()  # a worker gone: what it held no longer counts
    assert gauges(stack.url)[("monkey_queue_prefetched", "gpu", "interactive")] == 0
    engine.dispose()

    # A real worker with two threads: the five quick jobs finish, two slow ones run,
    # three wait on the list. kombu's unacked hash holds what the worker received.
    stack.start_worker("llm", concurrency=2)
    wait_until(lambda: r.llen("llm") == 0 and r.hlen("unacked") == 0, 20, "quick jobs done")
    for _ in range(5):
        stack.submit(input={"prompt": "a b c d e f"}, params={"delay_ms": 1500})
    wait_until(lambda: gauges(stack.url)[("monkey_queue_running", "llm", "interactive")] == 2,
               20, "two slow jobs running")
    # kombu's bookkeeping of what the worker received is written QOS_DEFER_S late.
    wait_until(lambda: r.hlen("unacked") == 2, 5, "the worker's unacked entries")
    g = gauges(stack.url)
    assert g[("monkey_queue_messages", "llm", "interactive")] == r.llen("llm") == 3
    running = g[("monkey_queue_running", "llm", "interactive")]
    prefetched = g[("monkey_queue_prefetched", "llm", "interactive")]
    assert running + prefetched == r.hlen("unacked") == 2
    assert g[("monkey_queue_depth", "llm", "interactive")] == 3


def test_batch_lines_count_under_the_batch_priority(make_stack):
    # No worker; the fair-share window (api/services/batch_fair.py) lets 1,000 lines onto
    # the broker and 1,000 more into the database, held; 1,000 stay in the file.
    # One line per message here (chunks would carry 64 echo lines to a message: the
    # messages gauge counts messages, the depth gauge lines).
    stack = make_stack("sqlite", env={"MONKEY_QUEUE_METRICS_TTL_S": "0",
                                      "MONKEY_BATCH_WINDOW": "1000",
                                      "MONKEY_BATCH_CHUNK_LINES": "1"})
    r = redis.Redis.from_url(stack.redis_url)
    c = stack.default_client
    lines = "".join(
        f'{{"custom_id": "l{i}", "method": "POST", "url": "/v1/chat/completions", '
        f'"body": {{"model": "debug/echo", "messages": [{{"role": "user", "content": "hi"}}]}}}}\n'
        for i in range(3000))
    f = c.post("/v1/files", files={"file": ("in.jsonl", lines.encode())},
               data={"purpose": "batch"}).json()
    c.post("/v1/batches", json={"input_file_id": f["id"], "endpoint": "/v1/chat/completions",
                                "completion_window": "24h"})
    batch_list = f"llm{PRIORITY_SEP}9"
    wait_until(lambda: r.llen(batch_list) == 1000, 60, "the batch's first lines published")
    g = gauges(stack.url)
    assert g[("monkey_queue_messages", "llm", "batch")] == 1000
    wait_until(lambda: gauges(stack.url)[("monkey_queue_depth", "llm", "batch")] == 2000, 60,
               "the next window of lines held in the database")
    g = gauges(stack.url)
    assert g[("monkey_queue_messages", "llm", "batch")] == 1000  # none released past it
    assert g[("monkey_queue_messages", "llm", "interactive")] == 0
