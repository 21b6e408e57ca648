import dataclasses
import threading

import pytest

from common.errors import JobInvalid, JobTimeout, OutOfMemory
from workers.runtimes.testing import RecordingContext

from .local_helpers import HookContext, run_concurrently

pytestmark = pytest.mark.timeout(120)

PROMPTS = [
    "the monkey writes code",
    "a batch of jobs waits in the queue for the worker to take them",
    "red green",
    "tokens stream back to the client one by one and then the job is done",
]


@pytest.fixture
def executor(runtime):
    """A dedicated executor over the runtime's tiny LM, with settings a test can pin."""
    from workers.runtimes.local.generate import GenerateExecutor

    lm = runtime.executors["tiny"].lm
    made = []

    def make(max_batch=4, max_wait_ms=10_000, **changes):
        ex = GenerateExecutor(dataclasses.replace(lm, **changes), max_batch=max_batch,
                              max_wait_ms=max_wait_ms)
        ex.start()
        made.append(ex)
        return ex

    yield make
    for ex in made:
        ex.close()


@pytest.fixture(scope="module")
def solo(runtime):
    """Greedy completions of each prompt, run alone: what batching must not change."""
    from workers.runtimes.base import JobSpec

    def run(prompt, n=24):
        job = JobSpec("solo", "generate", "local/tiny", {"prompt": prompt}, {"max_tokens": n}, 1)
        return runtime.generate(job, RecordingContext()).text

    return {p: run(p) for p in PROMPTS}


def test_exactly_max_tokens_streamed_as_the_final_text(runtime, make_job):
    ctx = RecordingContext()
    result = runtime.generate(make_job(max_tokens=12), ctx)
    assert result.finish_reason == "length"
    assert result.completion_tokens == 12 and len(ctx.tokens) == 12
    assert "".join(ctx.tokens) == result.text
    assert result.prompt_tokens == 4  # <|user|> the monkey <|assistant|>


def test_greedy_equals_transformers_generate(runtime, make_job):
    import torch

    lm = runtime.executors["tiny"].lm
    messages = [{"role": "system", "content": "one two"}, {"role": "user", "content": "red"}]
    result = runtime.generate(make_job(input={"messages": messages}, max_tokens=16),
                              RecordingContext())
    text = lm.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    ids = lm.tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        out = lm.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=16,
                                do_sample=False)
    expected = lm.tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
    assert result.text.strip() == expected.strip()


def test_batched_rows_generate_what_they_generate_alone(executor, make_job, solo):
    ex = executor(max_batch=4)  # the four prompts, of different lengths, share one batch
    results = run_concurrently([
        lambda p=p: ex.generate(make_job(input={"prompt": p}, max_tokens=24), RecordingContext())
        for p in PROMPTS
    ])
    assert [r.text for r in results] == [solo[p] for p in PROMPTS]
    assert ex.stats.batch_sizes[0] == 4
    assert ex.stats.forwards == 24  # one prefill and 23 decode steps for 96 tokens


def test_newcomers_join_a_running_batch(executor, make_job, solo):
    ex = executor(max_batch=4, max_wait_ms=0)
    submitted = threading.Event()
    submit = ex.submit

    def submit_and_tell(request):
        submit(request)
        submitted.set()

    late, rows_at = [], {}

    def start_late(ctx):
        # Runs on the executor thread, between steps: the second job arrives while the first
        # is mid-generation, and is in the inbox before the next step.
        rows_at[len(ctx.tokens)] = len(ex.rows)
        if len(ctx.tokens) == 5:
            ex.submit = submit_and_tell
            job = make_job(input={"prompt": PROMPTS[1]}, max_tokens=24)
            late.append(threading.Thread(
                target=lambda: late.append(ex.generate(job, RecordingContext()))))
            late[0].start()
            assert submitted.wait(10)

    first = ex.generate(make_job(input={"prompt": PROMPTS[0]}, max_tokens=24),
                        HookContext(start_late))
    late[0].join(30)
    assert rows_at[5] == 1 and rows_at[6] == 2  # joined at the next step boundary
    assert first.text == solo[PROMPTS[0]] and late[1].text == solo[PROMPTS[1]]


def test_same_seed_same_text_alone_or_batched(executor, runtime, make_job):
    def job(seed):
        return make_job(max_tokens=16, temperature=1.0, top_p=0.9, seed=seed)

    alone = runtime.generate(job(7), RecordingContext()).text
    assert runtime.generate(job(7), RecordingContext()).text == alone
    assert runtime.generate(job(8), RecordingContext()).text != alone
    ex = executor(max_batch=4)
    batched = run_concurrently([lambda s=s: ex.generate(job(s), RecordingContext())
                                for s in (1, 7, 2, 3)])
    assert batched[1].text == alone


def test_cancel_one_of_four(executor, make_job):
    ex = executor(max_batch=4)
    third_token = threading.Event()
    victim = HookContext(lambda ctx: len(ctx.tokens) == 3 and third_token.set())
    contexts = [RecordingContext(), victim, RecordingContext(), RecordingContext()]
    at_cancel = []

    def cancel():
        third_token.wait(30)
        at_cancel.append(len(victim.tokens))
        victim.stop("cancelled")

    canceller = threading.Thread(target=cancel)
    canceller.start()
    results = run_concurrently([
        lambda c=c, p=p: ex.generate(make_job(input={"prompt": p}, max_tokens=40), c)
        for c, p in zip(contexts, PROMPTS, strict=True)
    ])
    canceller.join(10)
    cancelled = results[1]
    assert cancelled.finish_reason == "cancelled"
    assert len(victim.tokens) - at_cancel[0] <= 2  # it left the batch within two tokens
    assert cancelled.text == "".join(victim.tokens)
    for i in (0, 2, 3):
        assert results[i].finish_reason == "length" and results[i].completion_tokens == 40


def test_timeout_raises(runtime, make_job):
    ctx = HookContext(lambda c: len(c.tokens) == 5 and c.stop("timeout"))
    with pytest.raises(JobTimeout):
        runtime.generate(make_job(max_tokens=100), ctx)
    assert len(ctx.tokens) <= 7


def test_stop_strings_trim_and_hold_back(runtime, make_job):
    full = RecordingContext()
    text = runtime.generate(make_job(max_tokens=20), full).text
    stop = full.tokens[6] + full.tokens[7]  # spans two tokens
    expected = text[:text.index(stop)]
    ctx = RecordingContext()
    result = runtime.generate(make_job(max_tokens=20, stop=["zzz", stop]), ctx)
    assert result.finish_reason == "stop" and result.text == expected
    assert "".join(ctx.tokens) == expected
    # A stop string that never comes: whatever was held back is released at the end.
    ctx = RecordingContext()
    result = runtime.generate(make_job(max_tokens=20, stop=[text[-3:] + "never"]), ctx)
    assert result.text == text == "".join(ctx.tokens)


def test_eos_ends_the_completion(executor, runtime, make_job):
    lm = runtime.executors["tiny"].lm
    first = RecordingContext()
    runtime.generate(make_job(max_tokens=8), first)
    eos = lm.tokenizer.convert_tokens_to_ids(first.tokens[3].strip())
    ex = executor(max_batch=1, max_wait_ms=0, eos_ids=frozenset({eos}))
    ctx = RecordingContext()
    result = ex.generate(make_job(max_tokens=8), ctx)
    assert result.finish_reason == "stop"
    assert result.text == "".join(first.tokens[:first.tokens.index(first.tokens[3])])


def test_out_of_memory_in_prefill_splits_the_batch(executor, make_job, solo):
    ex = executor(max_batch=4)
    ex.simulate_oom_above = 2
    results = run_concurrently([
        lambda p=p: ex.generate(make_job(input={"prompt": p}, max_tokens=24), RecordingContext())
        for p in PROMPTS
    ])
    assert [r.text for r in results] == [solo[p] for p in PROMPTS]
    assert max(ex.stats.batch_sizes) <= 2 and ex.stats.oom_splits >= 1


def test_out_of_memory_in_decode_sends_rows_back(executor, make_job, solo):
    ex = executor(max_batch=4)

    def squeeze(ctx):  # memory runs short mid-generation
        if len(ctx.tokens) == 6:
            ex.simulate_oom_above = 2

    contexts = [HookContext(squeeze)] + [RecordingContext() for _ in PROMPTS[1:]]
    results = run_concurrently([
        lambda c=c, p=p: ex.generate(make_job(input={"prompt": p}, max_tokens=24), c)
        for c, p in zip(contexts, PROMPTS, strict=True)
    ])
    assert [r.text for r in results] == [solo[p] for p in PROMPTS]
    assert ex.stats.oom_splits >= 1 and ex.stats.batch_sizes[0] == 4


def test_a_newcomer_that_does_not_fit_waits_for_a_row_to_leave(executor, make_job, solo):
    ex = executor(max_batch=2)  # the first two jobs start together
    submitted = threading.Event()
    submit = ex.submit

    def submit_and_tell(request):
        submit(request)
        submitted.set()

    late = []

    def arrive_late(ctx):  # memory for two rows only, and a third job comes
        if len(ctx.tokens) == 3 and not late:
            ex.simulate_oom_above, ex.max_batch, ex.limit = 2, 4, 4
            ex.submit = submit_and_tell
            job = make_job(input={"prompt": PROMPTS[2]}, max_tokens=24)
            late.append(threading.Thread(
                target=lambda: late.append(ex.generate(job, RecordingContext()))))
            late[0].start()
            assert submitted.wait(10)

    jobs = [(PROMPTS[0], 24, HookContext(arrive_late)), (PROMPTS[1], 12, RecordingContext())]
    results = run_concurrently([
        lambda p=p, n=n, c=c: ex.generate(make_job(input={"prompt": p}, max_tokens=n), c)
        for p, n, c in jobs
    ])
    late[0].join(30)
    assert results[0].text == solo[PROMPTS[0]]
    assert solo[PROMPTS[1]].startswith(results[1].text) and results[1].completion_tokens == 12
    assert late[1].text == solo[PROMPTS[2]]  # it ran once the short job had left
    assert ex.stats.oom_splits == 1 and max(ex.stats.batch_sizes) == 2


def test_out_of_memory_alone_fails_the_job(executor, make_job):
    ex = executor(max_batch=4, max_wait_ms=0)
    ex.simulate_oom_above = 0
    with pytest.raises(OutOfMemory):
        ex.generate(make_job(max_tokens=4), RecordingContext())


@pytest.mark.parametrize("params", [
    {"max_tokens": 0}, {"temperature": -1}, {"top_p": 0}, {"stop": [1]}, {"max_tokens": "x"},
])
def test_bad_parameters(runtime, make_job, params):
    with pytest.raises(JobInvalid):
        runtime.generate(make_job(**params), RecordingContext())


def test_bad_input_and_too_long_prompt(runtime, make_job):
    for bad in ({}, {"prompt": 3}, {"messages": [{"role": "user"}]}, {"messages": []}):
        with pytest.raises(JobInvalid):
            runtime.generate(make_job(input=bad), RecordingContext())
    with pytest.raises(JobInvalid, match="tokens"):
        runtime.generate(make_job(input={"prompt": "one two " * 200}), RecordingContext())
