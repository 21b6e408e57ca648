"""GET /v1/jobs?q=: the search over a job's id, its batch line's custom_id and its input
text, on SQLite and Postgres (the service function on a migrated database)."""

from __future__ import annotations

import asyncio

import pytest

from api.deps import Principal
from api.services import jobs as svc
from common.db import async_sessions, make_async_engine
from common.errors import InvalidRequest
from common.migrate import upgrade
from common.schemas import JobCreate
from common.settings import Settings
from tests.conftest import make_database

ME = Principal(key_id="key_me", name="me")
OTHER = Principal(key_id="key_other", name="other")


@pytest.fixture(params=["sqlite", "postgres"])
def settings(request, tmp_path):
    db = make_database(request.param, tmp_path)
    s = Settings(DATABASE_URL=db.url, MONKEY_DATA_DIR=str(tmp_path))
    upgrade(s)
    yield s
    if db.drop:
        db.drop()


class Jobs:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.engine = make_async_engine(settings)
        self.sessions = async_sessions(self.engine)

    async def add(self, principal: Principal = ME, *, custom_id: str | None = None,
                  status: str = "queued", **body) -> str:
        body.setdefault("model", "debug/echo")
        values = svc.new_job_values(settings=self.settings, principal=principal,
                                    job_in=JobCreate(**body), custom_id=custom_id)
        values["status"] = status
        async with self.sessions() as s:
            await s.execute(svc._INSERT_JOB, values)
            await s.commit()
        await asyncio.sleep(0.002)  # ids are time-ordered to the millisecond
        return values["id"]

    async def find(self, q: str, principal: Principal = ME, **kw) -> dict:
        kw.setdefault("limit", 20)
        async with self.sessions() as s:
            return await svc.list_jobs(session=s, principal=principal, status=kw.pop(
                "status", None), kind=None, after=kw.pop("after", None), q=q, **kw)

    async def ids(self, q: str, **kw) -> list[str]:
        return [j["id"] for j in (await self.find(q, **kw))["data"]]


def test_search_finds_prompts_messages_texts_custom_ids_and_ids(settings):
    async def go() -> None:
        jobs = Jobs(settings)
        fib = await jobs.add(input={"prompt": "Write a Fibonacci function in Python"})
        chat = await jobs.add(input={"messages": [
            {"role": "system", "content": "You review code"},
            {"role": "user", "content": "Is this quicksort stable?"}]})
        embed = await jobs.add(kind="embed", model="local/all-MiniLM-L6-v2",
                               input={"texts": ["first text", "un café noir"]})
        line = await jobs.add(input={"prompt": "plain"}, custom_id="request-42")
        odd = await jobs.add(input={"prompt": 'a 50% "quoted"\nline with a_b'},
                             status="succeeded")
        theirs = await jobs.add(OTHER, input={"prompt": "Fibonacci too"})

        assert await jobs.ids("fibonacci") == [fib]  # case-insensitive, this key's only
        assert await jobs.ids("fibonacci", principal=OTHER) == [theirs]
        assert await jobs.ids("QUICKSORT") == [chat]
        assert await jobs.ids("review") == [chat]
        assert await jobs.ids("café") == [embed]  # JSON keeps it as \\u00e9
        assert await jobs.ids("request-4") == [line]
        assert await jobs.ids(fib[-10:]) == [fib]
        assert await jobs.ids("resp_" + chat.removeprefix("job_")) == [chat]
        # LIKE's wildcards and JSON's escapes are text like any other.
        assert await jobs.ids("50%") == [odd]
        assert await jobs.ids("a_b") == [odd]
        assert await jobs.ids('"quoted"\nline') == [odd]
        assert await jobs.ids("%") == [odd]
        # With the other filters.
        assert await jobs.ids("a", status="succeeded") == [odd]
        assert await jobs.ids("nowhere at all") == []
        with pytest.raises(InvalidRequest, match="NUL"):
            await jobs.ids("a\x00b")
        await jobs.engine.dispose()

    asyncio.run(go())


def test_the_input_json_keys_do_not_match_and_pages_skip_past_them(settings):
    async def go() -> None:
        jobs = Jobs(settings)
        hit = await jobs.add(input={"prompt": "the prompt word itself"})
        # Every one of these has "prompt" and "content" among its JSON keys, not values.
        for i in range(5):
            await jobs.add(input={"prompt": f"other {i}"})
        await jobs.add(input={"messages": [{"role": "user", "content": "x"}]})
        hit2 = await jobs.add(input={"messages": [{"role": "user", "content": "prompt?"}]})
        page = await jobs.find("prompt", limit=1)
        assert [j["id"] for j in page["data"]] == [hit2] and page["has_more"]
        page = await jobs.find("prompt", limit=1, after=page["last_id"])
        assert [j["id"] for j in page["data"]] == [hit] and not page["has_more"]
        assert await jobs.ids("role") == []
        assert await jobs.ids("user") == []  # a role is no text of the job's
        await jobs.engine.dispose()

    asyncio.run(go())


def test_search_looks_through_the_newest_jobs_of_the_key_only(settings, monkeypatch):
    async def go() -> None:
        jobs = Jobs(settings)
        old = await jobs.add(input={"prompt": "needle, old"})
        newer = [await jobs.add(input={"prompt": f"needle {i}"}) for i in range(3)]
        await jobs.add(OTHER, input={"prompt": "not counted in my window"})
        assert len(await jobs.ids("needle")) == 4
        monkeypatch.setattr(svc, "SEARCH_WINDOW", 3)
        assert await jobs.ids("needle") == newer[::-1]
        assert old not in await jobs.ids("old")
        await jobs.engine.dispose()

    asyncio.run(go())
