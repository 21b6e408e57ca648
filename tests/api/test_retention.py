"""Retention on both databases: what set its own expires_after, or outlived
MONKEY_RETENTION_DAYS, is deleted by the sweep (api/retention.py), slice by slice, with
its event stream, its file parts or its batch's lines; its GET then says it expired.

The sweep is driven from the test (`sweep(stack, now=...)`, one whole pass at a chosen
time), so nothing waits for a clock; one test checks that the control process runs it
by itself."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta

import openai
import pytest
import redis
import redis.asyncio as aioredis
from sqlalchemy import event, func, select, update

from api.retention import Sweeper
from common.batches_db import Batch, File, FilePart
from common.db import Job, async_sessions, make_async_engine, make_sync_engine, utcnow
from common.events import events_key
from common.responses_db import ResponseRow
from common.settings import Settings
from common.swept import Swept
from common.webhooks import WebhookDelivery
from tests.conftest import Stack, module_stack, wait_until

DAY = timedelta(days=1)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def stack(request, tmp_path_factory, redis_base):
    # The control process's own sweep stays out of the way: the tests drive it.
    yield from module_stack(request.param, tmp_path_factory, redis_base, "retain",
                            env={"MONKEY_SWEEP_S": "3600", "MONKEY_WEBHOOK_ALLOW_PRIVATE": "1"})


def sweep(stack: Stack, now: datetime, deletes: list[tuple[str, int]] | None = None,
          **env) -> dict[str, int]:
    """One sweep pass at `now`, with these settings (MONKEY_... names); the DELETE
    statements it ran, with their row counts, go to `deletes`."""
    settings = Settings(DATABASE_URL=stack.db.url, REDIS_URL=stack.redis_url,
                        MONKEY_DATA_DIR=str(stack.tmp), **env)

    async def run() -> dict[str, int]:
        engine = make_async_engine(settings)
        if deletes is not None:
            @event.listens_for(engine.sync_engine, "after_cursor_execute")
            def seen(conn, cursor, statement, params, context, executemany):
                if statement.lstrip().upper().startswith("DELETE"):
                    deletes.append((statement, cursor.rowcount))
        client = aioredis.Redis.from_url(settings.redis_url)
        try:
            return await Sweeper(sessions=async_sessions(engine), redis=client,
                                 settings=settings).sweep(now)
        finally:
            await client.aclose()
            await engine.dispose()

    return asyncio.run(run())


def count(stack: Stack, stmt) -> int:
    engine = make_sync_engine(stack.settings)
    try:
        with engine.connect() as conn:
            return conn.execute(stmt).scalar_one()
    finally:
        engine.dispose()


def finished_at(job: dict) -> datetime:
    return datetime.fromisoformat(job["finished_at"].replace("Z", "+00:00"))


def expired_404(client, path: str) -> str:
    resp = client.get(path)
    assert resp.status_code == 404, resp.text
    return resp.json()["error"]["message"]


def sdk(stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.url + "/v1", api_key=stack.key, max_retries=0,
                         timeout=60, _strict_response_validation=True)


def test_a_job_with_expires_after_goes_with_its_stream_and_says_it_expired(stack):
    client = stack.client(stack.new_key("expiring"))
    short = stack.submit(client, input={"prompt": "short lived"}, expires_after=1)
    kept = stack.submit(client, input={"prompt": "kept for the default time"})
    short, kept = stack.wait(short["id"], client=client), stack.wait(kept["id"], client=client)
    assert short["status"] == kept["status"] == "succeeded"
    r = redis.Redis.from_url(stack.redis_url)
    assert r.exists(events_key(short["id"]))

    # Not yet: half a second after it ended, it is all there.
    sweep(stack, finished_at(short) + timedelta(seconds=0.5))
    assert stack.get(short["id"], client)["id"] == short["id"]

    sweep(stack, finished_at(short) + timedelta(seconds=1.5))
    assert count(stack, select(func.count()).select_from(Job)
                 .where(Job.id == short["id"])) == 0
    assert not r.exists(events_key(short["id"]))
    message = expired_404(client, f"/v1/jobs/{short['id']}")
    assert message == (f"job {short['id']} expired on "
                       f"{finished_at(short) + timedelta(seconds=1):%Y-%m-%d %H:%M:%S} UTC "
                       "and was deleted (expires_after=1)")
    assert "expired on" in expired_404(client, f"/v1/jobs/{short['id']}/events")
    assert client.post(f"/v1/jobs/{short['id']}/cancel").status_code == 404
    # Another key learns nothing of it.
    other = stack.client(stack.new_key("other"))
    assert expired_404(other, f"/v1/jobs/{short['id']}") == f"no job {short['id']!r}"
    # The job without expires_after stays (MONKEY_RETENTION_DAYS is 30).
    assert stack.get(kept["id"], client)["status"] == "succeeded"
    assert r.exists(events_key(kept["id"]))


def test_ended_jobs_go_after_the_retention_days_and_tombstones_later(stack):
    client = stack.client(stack.new_key("retained"))
    job = stack.wait(stack.submit(client, input={"prompt": "a month"})["id"], client=client)
    ended = finished_at(job)
    # 0 keeps them forever.
    sweep(stack, ended + 1000 * DAY, MONKEY_RETENTION_DAYS=0)
    assert stack.get(job["id"], client)["status"] == "succeeded"
    sweep(stack, ended + 2 * DAY, MONKEY_RETENTION_DAYS=3)
    assert stack.get(job["id"], client)["status"] == "succeeded"

    counts = sweep(stack, ended + 4 * DAY, MONKEY_RETENTION_DAYS=3)
    assert counts["jobs"] >= 1
    assert expired_404(client, f"/v1/jobs/{job['id']}").endswith(
        "and was deleted (MONKEY_RETENTION_DAYS=3)")
    # The tombstone itself goes after MONKEY_RETENTION_TOMBSTONE_DAYS.
    sweep(stack, utcnow() + 2 * DAY, MONKEY_RETENTION_DAYS=0,
          MONKEY_RETENTION_TOMBSTONE_DAYS=1)
    assert count(stack, select(func.count()).select_from(Swept)
                 .where(Swept.id == job["id"])) == 0
    assert expired_404(client, f"/v1/jobs/{job['id']}") == f"no job {job['id']!r}"


def test_a_job_waits_for_its_webhook_before_it_goes(stack):
    # Nothing listens on port 9: the delivery is retried (for days, by default).
    job = stack.submit(input={"prompt": "call me"}, expires_after=1,
                       webhook="http://127.0.0.1:9/hook")
    job = stack.wait(job["id"])
    deliveries = select(WebhookDelivery.status).where(WebhookDelivery.subject_id == job["id"])
    engine = make_sync_engine(stack.settings)
    try:
        wait_until(lambda: _statuses(engine, deliveries) == ["pending"], 30,
                   "the delivery handed over")
        sweep(stack, finished_at(job) + DAY)
        assert stack.get(job["id"])["id"] == job["id"]
        # Its retries over (as MONKEY_WEBHOOK_RETRY_S would end them), the job goes, and
        # its delivery log with it.
        with engine.begin() as conn:
            conn.execute(update(WebhookDelivery).where(WebhookDelivery.subject_id == job["id"])
                         .values(status="failed", next_attempt_at=None))
        sweep(stack, finished_at(job) + DAY)
        assert _statuses(engine, deliveries) == []
        assert "expired on" in expired_404(stack.default_client, f"/v1/jobs/{job['id']}")
    finally:
        engine.dispose()


def _statuses(engine, stmt) -> list[str]:
    with engine.connect() as conn:
        return list(conn.execute(stmt).scalars())


def test_expires_after_is_checked(stack):
    client = stack.client()
    for bad in (0, -5, 365 * 24 * 3600 + 1, "soon"):
        resp = client.post("/v1/jobs", json={"model": "debug/echo",
                                             "input": {"prompt": "x"}, "expires_after": bad})
        assert resp.status_code == 422, resp.text
        assert "expires_after" in resp.text
    resp = client.post("/v1/responses", json={"model": "debug/echo", "input": "x",
                                              "expires_after": 0})
    assert resp.status_code == 400 and "expires_after" in resp.text


def test_a_response_with_expires_after_goes_with_its_job(stack):
    client = sdk(stack)
    resp = client.responses.create(model="debug/echo", input="brief",
                                   extra_body={"expires_after": 5})
    assert resp.status == "completed"
    job_id = "job_" + resp.id.removeprefix("resp_")
    ended = finished_at(stack.get(job_id))
    sweep(stack, ended + timedelta(seconds=6))
    assert count(stack, select(func.count()).select_from(ResponseRow)
                 .where(ResponseRow.job_id == job_id)) == 0
    with pytest.raises(openai.NotFoundError) as caught:
        client.responses.retrieve(resp.id)
    assert f"response {resp.id} expired on" in str(caught.value)
    assert "(expires_after=5)" in str(caught.value)
    with pytest.raises(openai.NotFoundError, match=f"previous response {resp.id} expired on"):
        client.responses.create(model="debug/echo", input="more", previous_response_id=resp.id)


def test_a_file_with_expires_after_goes_with_its_parts(stack):
    client = sdk(stack)
    with pytest.raises(openai.BadRequestError, match="expires_after.seconds"):
        client.files.create(file=("f.jsonl", b"{}\n"), purpose="batch",
                            expires_after={"anchor": "created_at", "seconds": 60})
    with pytest.raises(openai.BadRequestError, match="expires_after.anchor"):
        client.files.create(file=("f.jsonl", b"{}\n"), purpose="batch",
                            expires_after={"anchor": "last_active_at", "seconds": 3600})
    f = client.files.create(file=("f.jsonl", b'{"a": 1}\n'), purpose="batch",
                            expires_after={"anchor": "created_at", "seconds": 3600})
    assert f.expires_at == f.created_at + 3600
    assert client.files.retrieve(f.id).expires_at == f.expires_at
    plain = client.files.create(file=("g.jsonl", b'{"b": 2}\n'), purpose="batch")
    # Without one: when MONKEY_RETENTION_DAYS (30) deletes it.
    assert plain.expires_at == plain.created_at + 30 * 24 * 3600
    parts = select(func.count()).select_from(FilePart).where(FilePart.file_id == f.id)
    assert count(stack, parts) == 1

    sweep(stack, datetime.fromtimestamp(f.expires_at - 1).astimezone())
    assert client.files.retrieve(f.id).id == f.id
    sweep(stack, datetime.fromtimestamp(f.expires_at + 1).astimezone())
    assert count(stack, parts) == 0
    assert count(stack, select(func.count()).select_from(File).where(File.id == f.id)) == 0
    with pytest.raises(openai.NotFoundError, match=r"expired on .* \(expires_after=3600\)"):
        client.files.retrieve(f.id)
    with pytest.raises(openai.NotFoundError, match="expired on"):
        client.files.content(f.id)
    assert client.files.retrieve(plain.id).id == plain.id


def test_a_batch_goes_with_its_lines_in_slices(stack):
    client = sdk(stack)
    lines = [{"custom_id": f"l{i}", "method": "POST", "url": "/v1/chat/completions",
              "body": {"model": "debug/echo", "messages": [{"role": "user", "content": "hi"}]}}
             for i in range(5)]
    f = client.files.create(file=("b.jsonl", b"".join(json.dumps(x).encode() + b"\n"
                                                      for x in lines)), purpose="batch")
    batch = client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions",
                                  completion_window="24h")
    wait_until(lambda: client.batches.retrieve(batch.id).status == "completed", 60,
               "batch completed", interval=0.2)
    done = client.batches.retrieve(batch.id)
    assert done.completed_at is not None
    line_ids = [j["id"] for j in stack.client().get(
        "/v1/jobs", params={"batch_id": batch.id, "limit": 100}).json()["data"]]
    assert len(line_ids) == 5
    lines_left = select(func.count()).select_from(Job).where(Job.batch_id == batch.id)
    batch_left = select(func.count()).select_from(Batch).where(Batch.id == batch.id)

    # Lines that ended long ago stay while their batch is not due: they are not swept
    # one by one.
    ended = datetime.fromtimestamp(done.completed_at).astimezone()
    engine = make_sync_engine(stack.settings)
    with engine.begin() as conn:
        conn.execute(update(Job).where(Job.batch_id == batch.id)
                     .values(finished_at=ended - 3 * DAY))
    engine.dispose()
    sweep(stack, ended + DAY - timedelta(seconds=5), MONKEY_RETENTION_DAYS=1)
    assert count(stack, lines_left) == 5 and count(stack, batch_left) == 1

    deletes: list[tuple[str, int]] = []
    counts = sweep(stack, ended + DAY + timedelta(seconds=5), deletes,
                   MONKEY_RETENTION_DAYS=1, MONKEY_SWEEP_SLICE=2)
    assert counts["batches"] >= 1 and counts["jobs"] >= 5
    assert count(stack, lines_left) == 0 and count(stack, batch_left) == 0
    # In slices of at most MONKEY_SWEEP_SLICE rows: 2 + 2 + 1 lines.
    job_deletes = [n for sql, n in deletes if sql.split()[2].strip('"') == "jobs"]
    assert job_deletes and max(job_deletes) <= 2 and sum(job_deletes) >= 5
    with pytest.raises(openai.NotFoundError, match="MONKEY_RETENTION_DAYS=1"):
        client.batches.retrieve(batch.id)
    assert "expired on" in expired_404(stack.client(), f"/v1/jobs/{line_ids[0]}")


def test_the_control_process_sweeps_by_itself(make_stack):
    stack = make_stack("sqlite", env={"MONKEY_SWEEP_S": "0.2"})
    stack.start_worker("llm", concurrency=2)
    job = stack.wait(stack.submit(input={"prompt": "gone soon"}, expires_after=1)["id"])
    assert job["status"] == "succeeded"

    def swept() -> bool:
        resp = stack.default_client.get(f"/v1/jobs/{job['id']}")
        return resp.status_code == 404 and "expired on" in resp.text

    wait_until(swept, 30, "the control process swept the job")
