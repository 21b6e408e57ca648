"""debug/embed end to end (API, control process, an llm worker): /v1/embeddings, a
native embed job, and Batch API lines run in chunks, one simulated forward pass each."""

from __future__ import annotations

from datetime import datetime

import pytest

from tests.api.test_batch_chunks import jobs
from tests.api.test_batches import read_lines, sdk, start_batch, wait_batch
from workers.runtimes.debug_embed import vector

PASS_MS = 300
ENV = {"MONKEY_BATCH_CHUNK_LINES": "10", "MONKEY_DEBUG_EMBED_BATCH_MS": str(PASS_MS)}


def embed_line(i: int) -> dict:
    return {"custom_id": f"r{i}", "method": "POST", "url": "/v1/embeddings",
            "body": {"model": "debug/embed", "input": [f"text {i}", f"more {i}"]}}


def at(t) -> datetime:
    return datetime.fromisoformat(t) if isinstance(t, str) else t


def test_debug_embed_through_the_api_and_a_chunked_batch(make_stack):
    stack = make_stack("sqlite", env=ENV)
    stack.start_worker("llm", concurrency=4)
    client = sdk(stack)

    one = client.embeddings.create(model="debug/embed", input=["hello world", "again"])
    assert [d.embedding for d in one.data] == [pytest.approx(vector("hello world")),
                                               pytest.approx(vector("again"))]
    job = stack.wait(stack.submit(kind="embed", model="debug/embed",
                                  input={"texts": ["hello world"]})["id"])
    assert job["status"] == "succeeded" and job["queue"] == "llm"
    assert job["output"]["dim"] == 384
    assert job["output"]["embeddings"][0] == pytest.approx(vector("hello world"))

    n = 30
    batch = start_batch(client, [embed_line(i) for i in range(n)], endpoint="/v1/embeddings")
    done = wait_batch(client, batch.id, timeout=90)
    assert done.status == "completed" and done.request_counts.completed == n
    out = read_lines(client, done.output_file_id)
    assert sorted(x["custom_id"] for x in out) == sorted(f"r{i}" for i in range(n))
    for x in out:
        i = int(x["custom_id"][1:])
        got = [d["embedding"] for d in x["response"]["body"]["data"]]
        assert got == [pytest.approx(vector(f"text {i}")), pytest.approx(vector(f"more {i}"))]
    # Three chunks of ten lines, one pass of 300 ms each: lines one by one would take
    # 30 passes (9 s) on the worker's one simulated device.
    rows = jobs(stack, batch.id).values()
    span = (max(at(j.finished_at) for j in rows) - min(at(j.finished_at) for j in rows))
    assert span.total_seconds() < 3 * PASS_MS / 1000 + 2, span
