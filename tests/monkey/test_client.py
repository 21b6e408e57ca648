"""monkey.client against the real stack: jobs, events with resume, batches; sync and async."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from monkey.client import (
    AsyncMonkeyClient,
    MonkeyAPIError,
    MonkeyClient,
    SSEParser,
    default_api_key,
)
from tests.conftest import free_port

PROMPT = "one two three four five six"


def chat_line(custom_id: str, prompt: str) -> dict:
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": "debug/echo", "messages": [{"role": "user", "content": prompt}]}}


def test_submit_get_wait_list_cancel(stack):
    with MonkeyClient(stack.url, stack.key) as mc:
        job = mc.submit("debug/echo", PROMPT, params={"delay_ms": 5}, metadata={"who": "test"})
        assert job["status"] == "queued" and job["metadata"] == {"who": "test"}
        done = mc.wait(job["id"], timeout=30)
        assert done["status"] == "succeeded" and done["output"]["text"] == PROMPT
        assert mc.get(job["id"]) == done
        assert job["id"] in [j["id"] for j in mc.list(status="succeeded", limit=100)["data"]]
        slow = mc.submit("debug/echo", PROMPT, params={"delay_ms": 500})
        assert mc.cancel(slow["id"])["status"] in ("cancelled", "cancelling")
        assert mc.wait(slow["id"], timeout=30)["status"] == "cancelled"
        emb = mc.submit("local/all-MiniLM-L6-v2", texts=["a", "b"])
        assert emb["kind"] == "embed" and emb["input"] == {"texts": ["a", "b"]}
        mc.cancel(emb["id"])  # no gpu worker here


def test_events_stream_and_resume(stack):
    with MonkeyClient(stack.url, stack.key) as mc:
        job = mc.submit("debug/echo", PROMPT, params={"delay_ms": 30})
        first = []
        for event in mc.events(job["id"]):
            first.append(event)
            if len(first) == 3:
                break
        rest = list(mc.events(job["id"], last_event_id=first[-1].id))
        assert rest[-1].type == "done" and rest[-1].data["status"] == "succeeded"
        whole = list(mc.events(job["id"]))
        assert [e.id for e in first + rest] == [e.id for e in whole]
        assert "".join(e.data["text"] for e in whole if e.type == "token") == PROMPT


def test_events_reconnect_after_a_drop(stack):
    """A proxy that cuts the stream after two events: the client resumes with
    Last-Event-ID and still sees every event exactly once."""
    seen_headers = []
    upstream = httpx.Client(base_url=stack.url, headers={"Authorization": f"Bearer {stack.key}"})

    def handler(request: httpx.Request) -> httpx.Response:
        seen_headers.append(request.headers.get("last-event-id"))
        resp = upstream.send(upstream.build_request(request.method, request.url.path,
                                                    headers=dict(request.headers)),
                             stream=True)
        body = []
        events = 0
        for line in resp.iter_lines():
            body.append(line + "\n")
            if line == "" and any(x.startswith("id:") for x in body[-4:]):
                events += 1
                if events == 2 and len(seen_headers) == 1:
                    resp.close()
                    return httpx.Response(200, headers={"content-type": "text/event-stream"},
                                          content="".join(body).encode())
        resp.close()
        return httpx.Response(200, headers={"content-type": "text/event-stream"},
                              content="".join(body).encode())

    with MonkeyClient(stack.url, stack.key) as direct:
        job = direct.submit("debug/echo", PROMPT, params={"delay_ms": 20})
    with MonkeyClient(stack.url, stack.key, transport=httpx.MockTransport(handler)) as mc:
        events = list(mc.events(job["id"]))
    upstream.close()
    assert len(seen_headers) == 2 and seen_headers[0] is None and seen_headers[1]
    assert events[-1].type == "done"
    ids = [e.id for e in events]
    assert len(ids) == len(set(ids))
    assert "".join(e.data["text"] for e in events if e.type == "token") == PROMPT


def test_errors_carry_status_type_and_message(stack):
    with MonkeyClient(stack.url, stack.key) as mc:
        with pytest.raises(MonkeyAPIError) as err:
            mc.get("job_nope")
        assert (err.value.status, err.value.type) == (404, "not_found")
        with pytest.raises(MonkeyAPIError) as err:
            mc.submit("nope/model", "x")
        assert err.value.status == 422 and "unknown model provider" in err.value.message
    with MonkeyClient(stack.url, "mk-wrong") as mc, pytest.raises(MonkeyAPIError) as err:
        mc.list()
    assert err.value.status == 401 and err.value.type == "unauthorized"
    with MonkeyClient(f"http://127.0.0.1:{free_port()}", "k") as mc, \
            pytest.raises(MonkeyAPIError) as err:
        mc.list()
    assert err.value.status == 0 and err.value.type == "connection_error"


def test_batches_through_the_client(stack, tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps(chat_line(f"c{i}", f"word {i}")) + "\n"
                            for i in range(12)))
    with MonkeyClient(stack.url, stack.key) as mc:
        batch = mc.submit_batch(path, metadata={"run": "1"})
        assert batch["endpoint"] == "/v1/chat/completions" and batch["status"] == "validating"
        seen = []
        final = mc.wait_batch(batch["id"], poll_s=0.2, timeout=60, on_update=seen.append)
        assert final["status"] == "completed" and seen[-1] == final
        results = mc.batch_results(batch["id"])
        assert [r["custom_id"] for r in results] == [f"c{i}" for i in range(12)]
        assert results[3]["response"]["body"]["choices"][0]["message"]["content"] == "word 3"
        assert batch["id"] in [b["id"] for b in mc.list_batches()["data"]]
        with pytest.raises(MonkeyAPIError) as err:
            mc.cancel_batch(batch["id"])
        assert err.value.status == 409


def test_async_client(stack, tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_text(json.dumps(chat_line("only", "async words")) + "\n")

    async def main():
        async with AsyncMonkeyClient(stack.url, stack.key) as mc:
            job = await mc.submit("debug/echo", PROMPT, params={"delay_ms": 5})
            events = [e async for e in mc.events(job["id"])]
            assert events[-1].type == "done"
            assert (await mc.wait(job["id"]))["status"] == "succeeded"
            assert (await mc.get(job["id"]))["output"]["text"] == PROMPT
            assert (await mc.list(limit=1))["data"][0]["id"] == job["id"]
            batch = await mc.submit_batch(path)
            final = await mc.wait_batch(batch["id"], poll_s=0.2, timeout=60)
            assert final["status"] == "completed"
            results = await mc.batch_results(batch["id"])
            assert results[0]["response"]["body"]["choices"][0]["message"]["content"] == \
                "async words"
            try:
                await mc.get("job_nope")
            except MonkeyAPIError as exc:
                return exc.status
        return None

    assert asyncio.run(main()) == 404


def test_sse_parser_and_default_key(tmp_path, monkeypatch):
    p = SSEParser()
    lines = ["retry: 1000", "", ": keep-alive", "", "id: 1-0", "event: token",
             'data: {"text": "a"}', ""]
    events = [e for e in map(p.feed, lines) if e]
    assert [(e.id, e.type, e.data) for e in events] == [("1-0", "token", {"text": "a"})]
    monkeypatch.delenv("MONKEY_API_KEY", raising=False)
    monkeypatch.setenv("MONKEY_DATA_DIR", str(tmp_path))
    assert default_api_key() is None
    (tmp_path / "api-key").write_text("mk-from-file\n")
    assert default_api_key() == "mk-from-file"
    monkeypatch.setenv("MONKEY_API_KEY", "mk-env")
    assert default_api_key() == "mk-env"
