"""Clients that stop reading their event stream: the API holds no more for each than
one read of its events (uvicorn stops writing when a socket is full), other streams
flow as before, and each stuck stream is closed after MONKEY_SSE_SEND_TIMEOUT_S,
giving its slot in the key's stream limit back."""

from __future__ import annotations

import socket
import time

import psutil

from tests.conftest import parse_sse, wait_until

STUCK = 20


def _open_unread(port: int, key: str, job_id: str) -> socket.socket:
    """A client that sends its request and never reads a byte (a small receive buffer,
    so the server's writes stop soon)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", port))
    s.sendall(f"GET /v1/jobs/{job_id}/events HTTP/1.1\r\nHost: t\r\n"
              f"Authorization: Bearer {key}\r\n\r\n".encode())
    return s


def test_stuck_readers_are_bounded_cut_off_and_do_not_slow_others(make_stack):
    stack = make_stack("sqlite", env={"MONKEY_SSE_SEND_TIMEOUT_S": "3",
                                      "MONKEY_MAX_STREAMS_PER_KEY": str(STUCK),
                                      "MONKEY_MAX_PROMPT_CHARS": "2000000",
                                      "MONKEY_EVENTS_MAXLEN": "200000"})
    stack.start_worker("llm", concurrency=4)
    # A chatty job: 120,000 token events, more than a socket's buffers take.
    words = " ".join(f"w{i:06d}" for i in range(120_000))
    chatty = stack.submit(input={"prompt": words})
    stack.wait(chatty["id"], timeout=120)
    with stack.client(timeout=60).stream("GET", f"/v1/jobs/{chatty['id']}/events") as resp:
        replay = sum(len(b) for b in resp.iter_bytes())  # what one reader is sent
    api = psutil.Process(stack.api_proc.pid)
    before = api.memory_info().rss
    stuck = [_open_unread(stack.api_port, stack.key, chatty["id"]) for _ in range(STUCK)]
    try:
        time.sleep(1)
        # Another client's stream of another job flows meanwhile (the key's slots are
        # all taken: another key).
        other_key = stack.new_key("other")
        started = time.monotonic()
        other = stack.submit(client=stack.client(other_key), input={"prompt": "one two three"})
        events = stack.events(other["id"], timeout=20, key=other_key)
        assert events[-1][1] == "done" and events[-1][2]["status"] == "succeeded"
        assert time.monotonic() - started < 10
        grown = api.memory_info().rss - before
        # A stuck stream holds at most one read of its events, decoded and encoded
        # again (here, the job's tokens having been written in large coalesced
        # entries, about its replay): bounded, and not growing while it waits.
        assert grown < STUCK * 6 * replay + 20 * 2**20, f"API grew {grown / 2**20:.0f} MiB"
        time.sleep(1)
        assert api.memory_info().rss - before <= grown + 4 * 2**20
    finally:
        for s in stuck:
            s.close()


def test_a_stuck_stream_is_closed_and_its_slot_given_back(make_stack):
    """A replay larger than the sockets' buffers: the server's writes stop, and after
    MONKEY_SSE_SEND_TIMEOUT_S each stuck stream is closed; the key, whose stream
    limit they filled, can follow a job again."""
    n = 3
    stack = make_stack("sqlite", env={"MONKEY_SSE_SEND_TIMEOUT_S": "2",
                                      "MONKEY_MAX_STREAMS_PER_KEY": str(n),
                                      "MONKEY_MAX_PROMPT_CHARS": "6000000",
                                      "MONKEY_MAX_BODY_BYTES": "6000000"})
    stack.start_worker("llm", concurrency=2)
    # 5 MB of text: its `done` alone is more than a socket's buffers take.
    job = stack.submit(input={"prompt": " ".join(f"w{i:06d}" for i in range(600_000))})
    stack.wait(job["id"], timeout=120)
    stuck = [_open_unread(stack.api_port, stack.key, job["id"]) for _ in range(n)]
    try:
        time.sleep(0.5)
        refused = stack.default_client.get(f"/v1/jobs/{job['id']}/events")
        assert refused.status_code == 429  # the key's streams are all taken
        log = stack.api_proc.log_path
        wait_until(lambda: log.read_text().count("its client read nothing") >= n, 20,
                   "every stuck stream closed")
        small = stack.submit(input={"prompt": "still served"})
        assert stack.events(small["id"], timeout=30)[-1][1] == "done"
    finally:
        for s in stuck:
            s.close()


def test_a_reader_that_resumes_reading_gets_the_rest(make_stack):
    """A client that reads slowly, pausing now and then, gets every token in order and
    the `done`. (The replay here fits the sockets' buffers, so the server's writes never
    wait on this client: the send timeout's cut-off is test_a_stuck_stream_is_closed...)"""
    stack = make_stack("sqlite", env={"MONKEY_SSE_SEND_TIMEOUT_S": "3"})
    stack.start_worker("llm", concurrency=2)
    words = [f"w{i:05d}" for i in range(15_000)]
    job = stack.submit(input={"prompt": " ".join(words)}, params={"max_tokens": 15_000})
    stack.wait(job["id"], timeout=60)
    text = []
    with stack.client(timeout=60).stream("GET", f"/v1/jobs/{job['id']}/events") as resp:
        lines = resp.iter_lines()
        for i, (_, type_, data) in enumerate(parse_sse(lines)):
            if i % 3000 == 0:
                time.sleep(1)  # slow, but under the send timeout
            if type_ == "token":
                text.append(data["text"])
            if type_ == "done":
                break
    assert "".join(text).split() == words
