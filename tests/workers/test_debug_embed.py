"""debug/embed: deterministic unit vectors with no weights, a forward pass that takes
fixed + per-text time, a chunk of batch lines in one pass, and where the catalog and
the batch machinery put it (the llm queue, in chunks)."""

from __future__ import annotations

import math
import threading
import time

import pytest

from api.services.batch_lines import chunked
from common.catalog import list_models, resolve
from common.errors import InvalidRequest, JobInvalid
from common.settings import Settings
from workers.runtimes import make_runtime, runtime_key
from workers.runtimes.base import JobSpec
from workers.runtimes.debug_embed import DIM, DebugRuntime, vector


def spec(texts: list[str], model: str = "debug/embed", n: int = 0) -> JobSpec:
    return JobSpec(id=f"job_{n}", kind="embed", model=model, input={"texts": texts},
                   params={}, attempt=1)


class Ctx:
    stop_event = threading.Event()

    def should_stop(self) -> bool:
        return False


def test_vectors_are_deterministic_unit_and_384_wide():
    a, b, c = vector("hello world"), vector("hello world"), vector("hello world!")
    assert a == b and a != c
    assert len(a) == DIM == 384 and all(isinstance(x, float) for x in a)
    assert math.fsum(x * x for x in a) == pytest.approx(1.0, abs=1e-9)
    assert math.fsum(x * x for x in vector("")) == pytest.approx(1.0, abs=1e-9)
    # Different texts point in unrelated directions.
    assert abs(math.fsum(x * y for x, y in zip(a, c, strict=True))) < 0.3


def test_a_job_embeds_each_text_in_order():
    out = DebugRuntime().embed(spec(["one two", "three", "one two"]), Ctx())
    assert out.embeddings == [vector("one two"), vector("three"), vector("one two")]
    assert out.dim == 384 and out.prompt_tokens == 5


def test_a_pass_takes_the_fixed_cost_plus_the_cost_per_text():
    rt = DebugRuntime(batch_ms=50, text_us=1000)
    for n in (1, 100):
        t0 = time.perf_counter()
        rt.forward([f"text {i}" for i in range(n)])
        took = time.perf_counter() - t0
        want = 0.050 + n * 0.001
        assert want <= took < want + 0.1, (n, took)
    t0 = time.perf_counter()
    DebugRuntime().forward(["free"] * 100)  # no cost set: only the vectors' CPU
    assert time.perf_counter() - t0 < 0.05


def test_passes_of_one_process_take_turns():
    """One worker process is one simulated device: concurrent passes do not overlap."""
    rt = DebugRuntime(batch_ms=100)
    threads = [threading.Thread(target=rt.forward, args=(["x"],)) for _ in range(4)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert time.perf_counter() - t0 >= 0.4 and rt.passes == 4


def test_a_chunk_is_one_pass_with_the_same_results_as_one_by_one():
    rt = DebugRuntime(batch_ms=100, text_us=100)
    jobs = [(spec([f"line {i}", f"more {i}"], n=i), Ctx()) for i in range(20)]
    jobs.insert(3, (spec(["x"], model="debug/nope", n=99), Ctx()))
    t0 = time.perf_counter()
    out = rt.embed_many(jobs)
    took = time.perf_counter() - t0
    assert rt.passes == 1 and 0.104 <= took < 0.3
    assert isinstance(out[3], JobInvalid)
    alone = DebugRuntime()
    for (job, ctx), got in zip(jobs, out, strict=True):
        if job.model == "debug/embed":
            want = alone.embed(job, ctx)
            assert (got.embeddings, got.prompt_tokens) == (want.embeddings, want.prompt_tokens)


def test_settings_set_the_pass_and_echo_still_generates():
    s = Settings(MONKEY_DEBUG_EMBED_BATCH_MS=2, MONKEY_DEBUG_EMBED_TEXT_US=50)
    rt = make_runtime(runtime_key("debug/embed"), s)
    assert isinstance(rt, DebugRuntime) and rt.pass_seconds(20_000) == pytest.approx(1.002)
    echo = JobSpec(id="j", kind="generate", model="debug/echo", input={"prompt": "a b"},
                   params={}, attempt=1)

    class Gen(Ctx):
        def wait(self, s: float) -> bool:
            return False

        def token(self, text: str) -> None:
            pass

    assert rt.generate(echo, Gen()).text == "a b"  # type: ignore[arg-type]


def test_the_catalog_runs_it_on_the_llm_queue_and_batches_chunk_it():
    s = Settings()
    info = resolve(s, "debug/embed", "embed")
    assert (info.queue, info.kinds, info.configured) == ("llm", ("embed",), True)
    assert "debug/embed" in [m.id for m in list_models(s)]
    with pytest.raises(InvalidRequest, match="does not serve 'generate'"):
        resolve(s, "debug/embed", "generate")
    with pytest.raises(InvalidRequest, match="debug/echo and debug/embed"):
        resolve(s, "debug/nope", "embed")
    assert chunked({"model": "debug/embed", "kind": "embed"})
