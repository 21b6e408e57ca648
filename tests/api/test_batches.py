"""The OpenAI Batch API driven by the official `openai` SDK: the whole flow, cancel,
validation with line numbers, priority against interactive jobs, and restarts."""

from __future__ import annotations

import base64
import json
import struct
import time
from datetime import UTC, datetime, timedelta

import openai
import pytest
from sqlalchemy import distinct, func, select, update

from common.batches_db import Batch
from common.db import Job, make_sync_engine
from tests.conftest import wait_until

TERMINAL = {"completed", "failed", "expired", "cancelled"}


def sdk(stack, key: str | None = None) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.url + "/v1", api_key=key or stack.key, max_retries=0,
                         timeout=120)


def chat_line(custom_id: str, prompt: str, **body) -> dict:
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": "debug/echo", "messages": [{"role": "user", "content": prompt}],
                     **body}}


def jsonl(lines: list) -> bytes:
    return b"".join((json.dumps(x) if not isinstance(x, str) else x).encode() + b"\n"
                    for x in lines)


def start_batch(client: openai.OpenAI, lines: list, endpoint="/v1/chat/completions", **kw):
    f = client.files.create(file=("batch.jsonl", jsonl(lines)), purpose="batch")
    return client.batches.create(input_file_id=f.id, endpoint=endpoint,
                                 completion_window="24h", **kw)


def wait_batch(client: openai.OpenAI, batch_id: str, until=TERMINAL, timeout: float = 60):
    found = {}

    def check() -> bool:
        found["b"] = client.batches.retrieve(batch_id)
        return found["b"].status in until

    wait_until(check, timeout, f"batch {batch_id} in {until}", interval=0.2)
    return found["b"]


def read_lines(client: openai.OpenAI, file_id: str | None) -> list[dict]:
    if file_id is None:
        return []
    return [json.loads(x) for x in client.files.content(file_id).text.splitlines()]


def test_batch_flow_answers_every_line_once(echo_stack):
    client = sdk(echo_stack)
    lines = [chat_line(f"req-{i}", f"hello number {i}") for i in range(30)]
    batch = start_batch(client, lines, metadata={"purpose": "test"})
    assert batch.object == "batch" and batch.status == "validating"
    assert batch.endpoint == "/v1/chat/completions" and batch.completion_window == "24h"
    assert batch.expires_at - batch.created_at == 24 * 3600
    assert batch.metadata == {"purpose": "test"}
    done = wait_batch(client, batch.id)
    assert done.status == "completed", done
    assert done.request_counts.total == 30 and done.request_counts.completed == 30
    assert done.request_counts.failed == 0 and done.error_file_id is None
    assert done.in_progress_at and done.finalizing_at and done.completed_at
    out = read_lines(client, done.output_file_id)
    assert sorted(x["custom_id"] for x in out) == sorted(f"req-{i}" for i in range(30))
    # In line order, each an OpenAI chat completion.
    assert [x["custom_id"] for x in out] == [f"req-{i}" for i in range(30)]
    for i, x in enumerate(out):
        assert x["error"] is None and x["response"]["status_code"] == 200
        body = x["response"]["body"]
        assert body["object"] == "chat.completion"
        assert body["choices"][0]["message"]["content"] == f"hello number {i}"
        assert body["usage"]["total_tokens"] == 6
    f = client.files.retrieve(done.output_file_id)
    assert f.purpose == "batch_output" and f.bytes > 0
    # Every line was a job with priority batch, its batch id and custom id.
    job = echo_stack.get(out[0]["response"]["request_id"])
    assert job["priority"] == "batch" and job["batch_id"] == batch.id
    # Listed, and another key sees none of it.
    assert batch.id in [b.id for b in client.batches.list()]
    other = sdk(echo_stack, echo_stack.new_key("other-batches"))
    for call in (lambda: other.batches.retrieve(batch.id),
                 lambda: other.batches.cancel(batch.id),
                 lambda: other.files.content(done.output_file_id)):
        with pytest.raises(openai.NotFoundError):
            call()
    assert other.batches.list().data == []


def test_lines_that_fail_go_to_the_error_file(make_stack):
    # A hosted model whose provider cannot be reached: those lines fail when they run.
    stack = make_stack("sqlite", env={"OPENAI_API_KEY": "sk-test",
                                      "OPENAI_BASE_URL": "http://127.0.0.1:9/v1",
                                      "MONKEY_PROVIDER_MAX_RETRIES": "0"})
    stack.start_worker("llm", concurrency=4)
    client = sdk(stack)
    lines = [chat_line("ok-1", "fine"), chat_line("bad-1", "x", model="openai/gpt-4o-mini"),
             chat_line("ok-2", "also fine"), chat_line("bad-2", "y", model="openai/gpt-4o-mini")]
    done = wait_batch(client, start_batch(client, lines).id)
    assert done.status == "completed"
    assert (done.request_counts.total, done.request_counts.completed,
            done.request_counts.failed) == (4, 2, 2)
    out = read_lines(client, done.output_file_id)
    err = read_lines(client, done.error_file_id)
    assert [x["custom_id"] for x in out] == ["ok-1", "ok-2"]
    assert [x["custom_id"] for x in err] == ["bad-1", "bad-2"]
    for x in err:
        assert x["response"] is None and x["error"]["code"].startswith("provider_")
        assert x["error"]["message"]
    # OpenAI names both of a batch's files `batch_output`; the SDK in strict mode lists
    # them (it refused the list while an error file had a purpose the schema lacks).
    assert client.files.retrieve(done.error_file_id).purpose == "batch_output"
    strict = openai.OpenAI(base_url=stack.url + "/v1", api_key=stack.key, max_retries=0,
                           _strict_response_validation=True)
    listed = {f.id: f.purpose for f in strict.files.list()}
    assert listed[done.error_file_id] == listed[done.output_file_id] == "batch_output"


@pytest.mark.parametrize("lines, code, line_no", [
    ([chat_line("a", "x"), chat_line("b", "y"), chat_line("a", "z")], "duplicate_custom_id", 3),
    ([chat_line("a", "x"), "{not json", chat_line("c", "z")], "invalid_json_line", 2),
    ([chat_line("a", "x"), {**chat_line("b", "y"), "url": "/v1/embeddings"}], "mismatched_url",
     2),
    ([chat_line("a", "x", model="nope/model")], "invalid_request", 1),
    ([chat_line("a", "x"), "[1, 2]"], "invalid_json_line", 2),
    ([{"method": "POST", "url": "/v1/chat/completions", "body": {}}], "invalid_custom_id", 1),
])
def test_bad_lines_fail_validation_with_their_line_number(echo_stack, lines, code, line_no):
    key = echo_stack.new_key("validation")
    client = sdk(echo_stack, key)
    batch = start_batch(client, lines)
    done = wait_batch(client, batch.id)
    assert done.status == "failed" and done.failed_at
    errors = done.errors.data
    assert [(e.code, e.line) for e in errors][:1] == [(code, line_no)], errors
    assert f"line {line_no}" in errors[0].message
    assert done.output_file_id is None and done.request_counts.total == 0
    # Nothing ran: no job exists for this key.
    assert echo_stack.client(key).get("/v1/jobs").json()["data"] == []


def test_blank_lines_count_in_line_numbers(echo_stack):
    client = sdk(echo_stack)
    raw = jsonl([chat_line("a", "x")]) + b"\n  \n" + jsonl([chat_line("a", "y")])
    f = client.files.create(file=("b.jsonl", raw), purpose="batch")
    b = client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions",
                              completion_window="24h")
    done = wait_batch(client, b.id)
    assert [(e.code, e.line) for e in done.errors.data] == [("duplicate_custom_id", 4)]


def test_bad_batch_requests_get_4xx(echo_stack):
    client = sdk(echo_stack)
    f = client.files.create(file=("b.jsonl", jsonl([chat_line("a", "x")])), purpose="batch")
    # 400, as OpenAI answers a bad request (the native API's 422).
    with pytest.raises(openai.BadRequestError):
        client.batches.create(input_file_id=f.id, endpoint="/v1/completions",
                              completion_window="24h")
    with pytest.raises(openai.BadRequestError):
        client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions",
                              completion_window="1h")
    with pytest.raises(openai.NotFoundError):
        client.batches.create(input_file_id="file_nope", endpoint="/v1/chat/completions",
                              completion_window="24h")
    with pytest.raises(openai.NotFoundError):
        client.batches.retrieve("batch_nope")


@pytest.mark.parametrize("db", ["sqlite", "postgres"])
def test_cancel_in_the_middle_keeps_finished_lines(make_stack, db):
    stack = make_stack(db)
    stack.start_worker("llm", concurrency=2)
    client = sdk(stack)
    lines = [chat_line(f"r{i}", "a b", delay_ms=100) for i in range(60)]
    batch = start_batch(client, lines)
    wait_until(lambda: client.batches.retrieve(batch.id).request_counts.completed >= 4, 60,
               "some lines done")
    cancelling = client.batches.cancel(batch.id)
    assert cancelling.status in ("cancelling", "cancelled")
    done = wait_batch(client, batch.id)
    assert done.status == "cancelled" and done.cancelled_at and done.cancelling_at
    out = read_lines(client, done.output_file_id)
    err = read_lines(client, done.error_file_id)
    assert len(out) >= 4 and len(out) == done.request_counts.completed < 60
    assert all(x["response"]["body"]["choices"][0]["message"]["content"] == "a b" for x in out)
    assert {x["error"]["code"] for x in err} == {"batch_cancelled"}
    # Every line answered exactly once, in one file or the other.
    ids = [x["custom_id"] for x in out + err]
    assert sorted(ids) == sorted(f"r{i}" for i in range(60))
    # Cancelling again is harmless; a finished batch cannot be cancelled.
    assert client.batches.cancel(batch.id).status == "cancelled"
    ok = start_batch(client, [chat_line("x", "y")])
    wait_batch(client, ok.id)
    with pytest.raises(openai.ConflictError):
        client.batches.cancel(ok.id)


def test_list_batches_pages_with_a_cursor(echo_stack):
    client = sdk(echo_stack, echo_stack.new_key("lister"))
    ids = [start_batch(client, [chat_line("a", "x")]).id for _ in range(3)]
    page1 = client.batches.list(limit=2)
    assert [b.id for b in page1.data] == ids[::-1][:2] and page1.has_more
    page2 = client.batches.list(limit=2, after=page1.data[-1].id)
    assert [b.id for b in page2.data] == ids[:1] and not page2.has_more
    assert [b.id for b in client.batches.list(limit=1)] == ids[::-1]  # the SDK follows pages


def _started(stack, *, ids=None, batch_id=None) -> dict[str, datetime]:
    """started_at of jobs, read from the database."""
    query = select(Job.id, Job.started_at)
    query = query.where(Job.batch_id == batch_id) if batch_id else query.where(Job.id.in_(ids))
    engine = make_sync_engine(stack.settings)
    try:
        with engine.connect() as c:
            return dict(c.execute(query).all())
    finally:
        engine.dispose()


@pytest.mark.slow
def test_interactive_jobs_start_before_the_rest_of_a_running_batch(make_stack):
    concurrency = 2
    stack = make_stack("sqlite")
    stack.start_worker("llm", concurrency=concurrency)
    client = sdk(stack)
    lines = [chat_line(f"r{i}", "slow", delay_ms=50) for i in range(2000)]
    batch = start_batch(client, lines)
    wait_until(lambda: client.batches.retrieve(batch.id).request_counts.completed >= 20, 90,
               "the batch to be running")
    submitted, on_broker = [], {}
    for i in range(5):
        job_id = stack.submit(input={"prompt": f"urgent {i}"})["id"]
        # The submit answers once its task is on the broker (the publish is awaited);
        # the INSERT before it may wait on SQLite's writer, busy with the batch.
        on_broker[job_id] = datetime.now(UTC)
        submitted.append(job_id)
        time.sleep(0.1)
    for job_id in submitted:
        assert stack.wait(job_id, timeout=30)["status"] == "succeeded"
    counts = client.batches.retrieve(batch.id).request_counts
    assert counts.completed < 1000, "the batch finished too soon to show anything"
    client.batches.cancel(batch.id)
    interactive = _started(stack, ids=submitted)
    lines_started = sorted(t for t in _started(stack, batch_id=batch.id).values() if t)
    for job_id, started in interactive.items():
        # Batch lines that started after this job's task was on the broker and before it
        # started: at most those a worker thread had already taken (one per thread).
        overtaking = [t for t in lines_started if on_broker[job_id] < t < started]
        assert len(overtaking) <= concurrency, (job_id, len(overtaking))
    wait_batch(client, batch.id, timeout=60)


def _count_jobs(stack, batch_id: str) -> tuple[int, int]:
    """(jobs, distinct custom ids) of a batch, from the database."""
    engine = make_sync_engine(stack.settings)
    try:
        with engine.connect() as c:
            return c.execute(select(func.count(), func.count(distinct(Job.custom_id)))
                             .where(Job.batch_id == batch_id)).one()
    finally:
        engine.dispose()


def test_a_batch_finishes_after_the_api_is_killed_mid_run(make_stack):
    stack = make_stack("sqlite")
    stack.start_worker("llm", concurrency=4)
    client = sdk(stack)
    batch = start_batch(client, [chat_line(f"k{i}", "a b c", delay_ms=100) for i in range(40)])
    wait_until(lambda: client.batches.retrieve(batch.id).request_counts.completed >= 4, 60,
               "some lines done")
    stack.kill(stack.api_proc)
    stack.start_api()
    client = sdk(stack)
    done = wait_batch(client, batch.id, timeout=90)
    assert done.status == "completed" and done.request_counts.completed == 40
    out = read_lines(client, done.output_file_id)
    assert [x["custom_id"] for x in out] == [f"k{i}" for i in range(40)]


@pytest.mark.slow
def test_enqueuing_resumes_after_the_api_is_killed_mid_enqueue(make_stack):
    # No worker: every line stays queued; no fair-share window, so that all are enqueued.
    stack = make_stack("sqlite", env={"MONKEY_BATCH_WINDOW": "0"})
    client = sdk(stack)
    n = 20_000
    batch = start_batch(client, [chat_line(f"e{i}", "x") for i in range(n)])
    wait_batch(client, batch.id, until={"in_progress"}, timeout=120)
    wait_until(lambda: _count_jobs(stack, batch.id)[0] > 0, 60, "the first chunk")
    stack.kill(stack.api_proc)
    at_kill = _count_jobs(stack, batch.id)[0]
    assert 0 < at_kill < n, "the kill came after enqueuing ended: nothing to resume"
    stack.start_api()
    client = sdk(stack)
    wait_until(lambda: _count_jobs(stack, batch.id)[0] == n, 180, "every line enqueued",
               interval=0.5)
    assert _count_jobs(stack, batch.id) == (n, n)  # each line once, none twice
    client.batches.cancel(batch.id)
    done = wait_batch(client, batch.id, timeout=180)
    assert done.status == "cancelled" and done.output_file_id is None
    err = read_lines(client, done.error_file_id)
    assert len(err) == n and {x["custom_id"] for x in err} == {f"e{i}" for i in range(n)}


def _lines_of_size(n: int, total_bytes: int) -> bytes:
    """n chat lines (custom ids c00000...) adding up to exactly total_bytes."""
    base = len(json.dumps(chat_line("c00000", ""))) + 1
    pad, extra = divmod(total_bytes - n * base, n)
    first = jsonl([chat_line("c00000", "x" * (pad + extra))])
    rest = jsonl([chat_line(f"c{i:05d}", "x" * pad) for i in range(1, n)])
    data = first + rest
    assert len(data) == total_bytes
    return data


@pytest.mark.slow
def test_50000_lines_and_200_mb_are_accepted_and_more_is_refused(make_stack):
    stack = make_stack("sqlite")  # no worker: nothing runs, the batch is cancelled
    client = sdk(stack)
    limit = 200 * 1024 * 1024
    with pytest.raises(openai.APIStatusError) as err:
        client.files.create(file=("over.jsonl", b"x" * (limit + 1)), purpose="batch")
    assert err.value.status_code == 413
    f = client.files.create(file=("full.jsonl", _lines_of_size(50_000, limit)), purpose="batch")
    assert f.bytes == limit
    batch = client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions",
                                  completion_window="24h")
    running = wait_batch(client, batch.id, until={"in_progress", "failed"}, timeout=300)
    assert running.status == "in_progress" and running.request_counts.total == 50_000
    # Cancelled while its lines are still being enqueued: every line is answered once.
    client.batches.cancel(batch.id)
    done = wait_batch(client, batch.id, timeout=300)
    assert done.status == "cancelled"
    err_lines = client.files.content(done.error_file_id).text.splitlines()
    ids = [json.loads(x)["custom_id"] for x in err_lines]
    assert len(ids) == 50_000 and len(set(ids)) == 50_000
    # One line more than 50,000 fails validation, naming that line.
    small = client.files.create(
        file=("many.jsonl", jsonl([chat_line(f"m{i}", "x") for i in range(50_001)])),
        purpose="batch")
    failed = wait_batch(client, client.batches.create(
        input_file_id=small.id, endpoint="/v1/chat/completions", completion_window="24h").id,
        timeout=300)
    assert failed.status == "failed"
    assert [(e.code, e.line) for e in failed.errors.data] == [("too_many_requests", 50_001)]


def test_an_embeddings_batch(make_stack):
    """Needs the gpu worker with local/all-MiniLM-L6-v2 (the local runtime)."""
    stack = make_stack("sqlite")
    stack.start_worker("gpu", concurrency=8, timeout=180)
    client = sdk(stack)

    def line(i: int, **body) -> dict:
        return {"custom_id": f"e{i}", "method": "POST", "url": "/v1/embeddings",
                "body": {"model": "local/all-MiniLM-L6-v2", "input": f"text number {i}",
                         **body}}

    lines = [line(0), line(1, input=["a", "b"]), line(2, encoding_format="base64")]
    done = wait_batch(client, start_batch(client, lines, endpoint="/v1/embeddings").id,
                      timeout=120)
    assert done.status == "completed" and done.request_counts.completed == 3
    out = {x["custom_id"]: x["response"]["body"] for x in read_lines(client, done.output_file_id)}
    assert out["e0"]["object"] == "list" and out["e0"]["model"] == "local/all-MiniLM-L6-v2"
    assert len(out["e0"]["data"][0]["embedding"]) == 384
    assert [d["index"] for d in out["e1"]["data"]] == [0, 1]
    packed = base64.b64decode(out["e2"]["data"][0]["embedding"])
    assert len(struct.unpack(f"<{len(packed) // 4}f", packed)) == 384
    assert out["e0"]["usage"]["prompt_tokens"] > 0


@pytest.mark.parametrize("db", ["sqlite", "postgres"])
def test_lines_not_started_within_the_window_expire(make_stack, db):
    stack = make_stack(db)  # no worker: the lines wait until their window closes
    client = sdk(stack)
    batch = start_batch(client, [chat_line(f"x{i}", "late") for i in range(10)])
    wait_batch(client, batch.id, until={"in_progress"})
    wait_until(lambda: _count_jobs(stack, batch.id)[0] == 10, 30, "lines enqueued")
    # The 24 hours pass: the batch's deadline and its lines' start_by move to the past.
    engine = make_sync_engine(stack.settings)
    past = datetime.now(UTC) - timedelta(seconds=1)
    with engine.begin() as c:
        c.execute(update(Job).where(Job.batch_id == batch.id).values(start_by=past))
        c.execute(update(Batch).where(Batch.id == batch.id).values(expires_at=past))
    engine.dispose()
    done = wait_batch(client, batch.id, timeout=60)
    assert done.status == "expired" and done.expired_at and done.output_file_id is None
    assert done.request_counts.completed == 0 and done.request_counts.failed == 0
    err = read_lines(client, done.error_file_id)
    assert [x["custom_id"] for x in err] == [f"x{i}" for i in range(10)]
    assert {x["error"]["code"] for x in err} == {"batch_expired"}


def test_result_files_are_written_while_the_last_lines_run(make_stack):
    """A batch's finished lines go to its result files while later lines still run, so
    finalize has only the last ones left; the file list shows no result file until
    the batch points to it, and no file of an earlier write is left behind."""
    from common.batches_db import File

    stack = make_stack("postgres")
    stack.start_worker("llm", concurrency=4)
    client = sdk(stack)
    # 3,000 lines of about 1.5 KB of output each: past one 4 MB part of the file.
    text = " ".join(["word"] * 300)
    lines = [chat_line(f"r{i}", text, max_tokens=400) for i in range(3000)]
    lines.append(chat_line("slow", "one two three four five six", delay_ms=2000))
    batch = start_batch(client, lines)
    engine = make_sync_engine(stack.settings)

    def statuses() -> dict:
        with engine.connect() as c:
            return dict(c.execute(select(Job.custom_id, Job.status)
                                  .where(Job.batch_id == batch.id)).all())

    def parts() -> list:
        with engine.connect() as c:
            return c.execute(select(File.id, File.parts).where(File.batch_id == batch.id)
                             ).all()

    try:
        # (The slow line's chunk neighbours too: a chunk writes its ended lines on a timer.)
        wait_until(lambda: (lambda st: len(st) == 3001 and st["slow"] == "running" and sum(
            v == "succeeded" for v in st.values()) == 3000)(statuses()), 120,
                   "the lines before the slow one done, the slow one running")
        wait_until(lambda: any(n >= 1 for _, n in parts()), 5, "a part of the output written")
        written = parts()
        assert statuses()["slow"] == "running"  # written before the last line ended
        running = client.batches.retrieve(batch.id)
        assert running.status == "in_progress" and running.output_file_id is None, running
        listed = {f.id for f in client.files.list(purpose="batch_output")}
        assert not listed & {file_id for file_id, _ in written}, listed

        done = wait_batch(client, batch.id, timeout=120)
        assert done.status == "completed" and done.error_file_id is None, done
        out = read_lines(client, done.output_file_id)
        assert [x["custom_id"] for x in out] == [f"r{i}" for i in range(3000)] + ["slow"]
        assert out[0]["response"]["body"]["choices"][0]["message"]["content"] == text
        with engine.connect() as c:
            kept = c.execute(select(File.id).where(File.batch_id == batch.id)).scalars().all()
        assert kept == [done.output_file_id]
        assert done.output_file_id in {f.id for f in client.files.list(purpose="batch_output")}
    finally:
        engine.dispose()
