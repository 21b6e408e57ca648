"""SIGTERM to an API process with open streams (a redeploy): each job event stream ends
at once with a reconnect hint, the process exits without waiting for them, and the
client resumes with Last-Event-ID on a second API process, missing nothing and seeing
nothing twice. A chat completions stream, which cannot resume, ends with an error chunk
that says to retry, and its job is cancelled."""

from __future__ import annotations

import asyncio
import json
import signal
import threading
import time

import httpx

from api.sse import RECONNECT, until_stopping
from monkey.embedded import free_port
from tests.conftest import parse_sse, wait_until

PROMPT = " ".join(f"w{i}" for i in range(60))


def test_a_stream_is_cut_between_events_and_its_source_closed():
    closed = asyncio.Event()

    async def source():
        try:
            yield b"event: a\n\n"
            await asyncio.sleep(3600)  # a job with nothing to say for now
            yield b"never"
        finally:
            closed.set()

    async def scenario() -> list[bytes]:
        stopping = asyncio.Event()
        out: list[bytes] = []

        async def read() -> None:
            async for chunk in until_stopping(source(), stopping):
                out.append(chunk)

        reader = asyncio.ensure_future(read())
        await asyncio.sleep(0.05)
        stopping.set()
        await asyncio.wait_for(reader, 2)
        assert closed.is_set()
        return out

    assert asyncio.run(scenario()) == [b"event: a\n\n", RECONNECT]


class Reader(threading.Thread):
    """Reads one streaming response to its end, keeping the raw lines."""

    def __init__(self, client: httpx.Client, method: str, url: str, **kw):
        super().__init__(daemon=True)
        self.client, self.method, self.url, self.kw = client, method, url, kw
        self.lines: list[str] = []
        self.ended_at: float | None = None

    def run(self) -> None:
        try:
            with self.client.stream(self.method, self.url, **self.kw) as resp:
                for line in resp.iter_lines():
                    self.lines.append(line)
        except httpx.HTTPError as exc:
            self.lines.append(f"!! {exc!r}")
        self.ended_at = time.monotonic()

    def data_lines(self) -> list[str]:
        return [line[len("data: "):] for line in self.lines if line.startswith("data: ")]


def test_sigterm_ends_streams_with_a_retry_hint_and_they_resume_elsewhere(make_stack):
    stack = make_stack("sqlite")
    stack.start_worker("llm", concurrency=4)
    second_port = free_port()
    stack.spawn("api2", ["api", "--port", str(second_port)], {"MONKEY_CONTROL": "external"})
    second = f"http://127.0.0.1:{second_port}"
    wait_until(lambda: _healthy(second), 30, "second API ready")
    first = stack.api_proc
    client = stack.client(timeout=60)

    job = stack.submit(input={"prompt": PROMPT}, params={"delay_ms": 100})  # 6 s of tokens
    events = Reader(client, "GET", f"/v1/jobs/{job['id']}/events")
    chat = Reader(client, "POST", "/v1/chat/completions", json={
        "model": "debug/echo", "stream": True,
        "messages": [{"role": "user", "content": PROMPT}], "delay_ms": 100})
    events.start()
    chat.start()
    wait_until(lambda: sum(line.startswith("event: token") for line in events.lines) >= 3
               and len(chat.data_lines()) >= 3, 20, "both streams under way")

    signalled = time.monotonic()
    first.send_signal(signal.SIGTERM)
    events.join(10)
    chat.join(10)
    first.wait(10)
    exited_s = time.monotonic() - signalled

    # Both streams ended at once, each with its hint, and the process did not wait for them.
    assert events.ended_at is not None and events.ended_at - signalled < 1.5, events.lines[-5:]
    assert chat.ended_at is not None and chat.ended_at - signalled < 1.5, chat.lines[-5:]
    assert events.lines[-3:] == [
        "retry: 250", ": the server is shutting down; reconnect with Last-Event-ID", ""]
    assert json.loads(chat.data_lines()[-1])["error"]["code"] == "server_shutting_down"
    assert exited_s < 3, exited_s  # uvicorn's graceful shutdown alone waited 5 s for them
    before = list(parse_sse(events.lines))
    assert before and all(t != "done" for _, t, _ in before)

    # The client resumes on the other instance from the last id it saw.
    last_id = [i for i, _, _ in before if i][-1]
    with httpx.Client(base_url=second, headers={"Authorization": f"Bearer {stack.key}"},
                      timeout=60) as other, \
            other.stream("GET", f"/v1/jobs/{job['id']}/events",
                         headers={"Last-Event-ID": last_id}) as resp:
        assert resp.status_code == 200
        after = list(parse_sse(resp.iter_lines()))
    seen = before + after
    ids = [i for i, _, _ in seen if i]
    assert len(ids) == len(set(ids)), "an event came twice"
    assert [t for _, t, _ in seen].count("done") == 1 and seen[-1][1] == "done"
    assert "".join(d["text"] for _, t, d in seen if t == "token") == PROMPT  # no gap
    assert seen[-1][2]["status"] == "succeeded"

    # The chat request's job was cancelled: nobody can resume its stream.
    chat_job = json.loads(chat.data_lines()[0])["id"].removeprefix("chatcmpl-")
    with httpx.Client(base_url=second, headers={"Authorization": f"Bearer {stack.key}"},
                      timeout=30) as other:
        wait_until(lambda: other.get(f"/v1/jobs/{chat_job}").json()["status"] == "cancelled",
                   15, "chat job cancelled")
    print(f"\napi: sigterm to streams ended {events.ended_at - signalled:.2f}s, "
          f"to exit {exited_s:.2f}s")


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
