"""Signed webhooks end to end: a real stack (API, control process, llm worker, Redis,
SQLite and Postgres) calls a real HTTP receiver in this process, and each delivery is
verified as a user would, with the official SDK's `client.webhooks.unwrap` (Standard
Webhooks). The receiver can be down, then come back."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import openai
import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from tests.api.openai_schema import validate
from tests.conftest import Stack, free_port, module_stack, wait_until

ENV = {"MONKEY_WEBHOOK_ALLOW_PRIVATE": "1", "MONKEY_WEBHOOK_BACKOFF_S": "0.3"}


class Receiver:
    """An HTTP server that records every POST (headers, body, arrival time)."""

    def __init__(self, port: int | None = None, status: int = 200):
        self.port = port or free_port()
        self.status = status
        self.got: list[tuple[dict, bytes, float]] = []
        self.server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["content-length"]))
                receiver.got.append(({k.lower(): v for k, v in self.headers.items()}, body,
                                     time.time()))
                self.send_response(receiver.status)
                self.end_headers()

            def log_message(self, *args):
                pass

        ThreadingHTTPServer.request_queue_size = 128  # deliveries arrive together
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    def events(self) -> list[dict]:
        return [json.loads(body) for _, body, _ in self.got]


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def hook_stack(request, tmp_path_factory, redis_base):
    """A module-wide stack per database that may call this machine's receivers."""
    yield from module_stack(request.param, tmp_path_factory, redis_base, "hooks", ENV)


@pytest.fixture
def receiver():
    r = Receiver().start()
    yield r
    r.stop()


def secret_of(stack: Stack) -> str:
    resp = stack.default_client.get("/v1/webhooks/default/secret")
    assert resp.status_code == 200
    secret = resp.json()["key"]
    assert secret.startswith("whsec_")
    return secret


def unwrap(stack: Stack, headers: dict, body: bytes, secret: str):
    client = openai.OpenAI(base_url=stack.url + "/v1", api_key="x", webhook_secret=secret)
    return client.webhooks.unwrap(body, headers)


def test_each_job_gets_exactly_its_terminal_event_signed(hook_stack, receiver):
    secret = secret_of(hook_stack)
    jobs = [hook_stack.submit(input={"prompt": f"job {i}"}, webhook=receiver.url)
            for i in range(5)]
    failing = hook_stack.submit(input={"prompt": "too slow"}, params={"delay_ms": 1000},
                                timeout_s=0.2, webhook=receiver.url)
    wait_until(lambda: len(receiver.got) >= 6, 30, "6 webhooks")
    time.sleep(1.0)  # nothing more comes
    assert len(receiver.got) == 6
    by_job = {}
    for headers, body, _ in receiver.got:
        event = unwrap(hook_stack, headers, body, secret)  # raises if the signature is bad
        # ...and the Standard Webhooks reference implementation agrees.
        assert Webhook(secret).verify(body, headers)["id"] == event.id
        payload = json.loads(body)
        assert headers["webhook-id"] == payload["id"] == event.id
        assert payload["object"] == "event" and payload["id"].startswith("evt_")
        by_job[payload["data"]["id"]] = payload
    assert set(by_job) == {j["id"] for j in jobs} | {failing["id"]}
    assert {by_job[j["id"]]["type"] for j in jobs} == {"job.succeeded"}
    assert by_job[failing["id"]]["type"] == "job.failed"
    assert by_job[failing["id"]]["data"]["error"]["type"] == "timeout"
    assert by_job[jobs[0]["id"]]["data"]["output"]["text"] == "job 0"
    log = hook_stack.default_client.get(f"/v1/jobs/{jobs[0]['id']}/webhook_deliveries").json()
    [delivery] = log["data"]
    assert delivery["status"] == "delivered" and delivery["attempts"] == 1
    assert delivery["last_status_code"] == 200 and delivery["type"] == "job.succeeded"
    assert secret not in json.dumps(log)


def test_start_and_completed_in_order(hook_stack, receiver):
    job = hook_stack.submit(input={"prompt": "a b c"}, params={"delay_ms": 200},
                            webhook=receiver.url, webhook_events_filter=["start", "completed"])
    wait_until(lambda: len(receiver.got) >= 2, 30, "2 webhooks")
    assert [e["type"] for e in receiver.events()] == ["job.started", "job.succeeded"]
    assert receiver.events()[0]["data"]["status"] == "running"
    assert {e["data"]["id"] for e in receiver.events()} == {job["id"]}


def test_tampered_or_stale_deliveries_fail_verification(hook_stack, receiver):
    secret = secret_of(hook_stack)
    hook_stack.submit(input={"prompt": "x"}, webhook=receiver.url)
    wait_until(lambda: receiver.got, 30, "a webhook")
    headers, body, _ = receiver.got[0]
    unwrap(hook_stack, headers, body, secret)
    with pytest.raises(openai.InvalidWebhookSignatureError):
        unwrap(hook_stack, headers, body.replace(b'"x"', b'"y"'), secret)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body.replace(b'"x"', b'"y"'), headers)
    stale = {**headers, "webhook-timestamp": str(int(time.time()) - 3600)}
    with pytest.raises(openai.InvalidWebhookSignatureError):
        unwrap(hook_stack, stale, body, secret)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body, stale)
    other = "whsec_" + "A" * 43 + "="
    with pytest.raises(openai.InvalidWebhookSignatureError):
        unwrap(hook_stack, headers, body, other)


def test_a_receiver_down_gets_the_event_when_it_is_back(hook_stack):
    receiver = Receiver()  # not listening yet: connections are refused
    job = hook_stack.submit(input={"prompt": "later"}, webhook=receiver.url)
    url = f"/v1/jobs/{job['id']}/webhook_deliveries"

    def failed_twice() -> bool:
        data = hook_stack.default_client.get(url).json()["data"]
        return bool(data) and data[0]["attempts"] >= 2

    wait_until(failed_twice, 30, "two failed attempts")
    [d] = hook_stack.default_client.get(url).json()["data"]
    assert d["status"] == "pending" and d["next_attempt_at"] is not None
    assert "ConnectError" in d["last_error"] and d["last_status_code"] is None
    receiver.start()
    try:
        wait_until(lambda: receiver.got, 30, "the webhook after the receiver came back")
        wait_until(lambda: hook_stack.default_client.get(url).json()["data"][0]["status"]
                   == "delivered", 10, "delivered")
        [d] = hook_stack.default_client.get(url).json()["data"]
        assert d["attempts"] >= 3 and len(d["log"]) == d["attempts"]
        assert d["log"][-1]["status_code"] == 200
        assert [e["type"] for e in receiver.events()] == ["job.succeeded"]
    finally:
        receiver.stop()


def test_a_receiver_answering_500_is_retried(hook_stack):
    receiver = Receiver(status=500).start()
    try:
        job = hook_stack.submit(input={"prompt": "again"}, webhook=receiver.url)
        wait_until(lambda: len(receiver.got) >= 2, 30, "two attempts")
        receiver.status = 204
        url = f"/v1/jobs/{job['id']}/webhook_deliveries"
        wait_until(lambda: hook_stack.default_client.get(url).json()["data"][0]["status"]
                   == "delivered", 30, "delivered")
        ids = {h["webhook-id"] for h, _, _ in receiver.got}
        assert len(ids) == 1  # the same event each time: a receiver can drop repeats
    finally:
        receiver.stop()


def test_responses_send_openais_webhook_events(hook_stack, receiver):
    secret = secret_of(hook_stack)
    client = openai.OpenAI(base_url=hook_stack.url + "/v1", api_key=hook_stack.key,
                           max_retries=0, webhook_secret=secret)
    done = client.responses.create(model="debug/echo", input="hi", background=True,
                                   extra_body={"webhook": receiver.url})
    slow = client.responses.create(model="debug/echo", input="a b c d e f", background=True,
                                   extra_body={"webhook": receiver.url, "delay_ms": 300})
    wait_until(lambda: client.responses.retrieve(slow.id).status == "in_progress", 15,
               "running")
    assert client.responses.cancel(slow.id).status == "cancelled"
    wait_until(lambda: len(receiver.got) >= 2, 30, "2 webhooks")
    events = {}
    for headers, body, _ in receiver.got:
        event = client.webhooks.unwrap(body, headers)
        events[event.data.id] = event
        validate({"response.completed": "WebhookResponseCompleted",
                  "response.cancelled": "WebhookResponseCancelled"}[event.type],
                 json.loads(body))
    assert events[done.id].type == "response.completed"
    assert events[slow.id].type == "response.cancelled"


def test_each_of_many_jobs_calls_its_own_webhook_once(hook_stack, receiver):
    """200 jobs naming their own webhook: one `job.succeeded` each (the time from a job's
    end to its event is bench/webhooks.py's figure, not a test's)."""
    n = 200
    jobs = [hook_stack.submit(input={"prompt": f"j{i}"}, webhook=receiver.url)
            for i in range(n)]
    wait_until(lambda: len(receiver.got) >= n, 120, f"{n} webhooks")
    time.sleep(0.5)  # nothing twice
    events = receiver.events()
    assert Counter(e["data"]["id"] for e in events) == Counter(j["id"] for j in jobs)
    assert {e["type"] for e in events} == {"job.succeeded"}


def test_a_batch_sends_its_end_once(hook_stack, receiver):
    secret = secret_of(hook_stack)
    client = openai.OpenAI(base_url=hook_stack.url + "/v1", api_key=hook_stack.key,
                           max_retries=0, webhook_secret=secret)
    line = {"custom_id": "a", "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": "debug/echo", "messages": [{"role": "user", "content": "hi"}]}}
    f = client.files.create(file=("b.jsonl", json.dumps(line).encode() + b"\n"),
                            purpose="batch")
    batch = client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions",
                                  completion_window="24h",
                                  extra_body={"webhook": receiver.url})
    wait_until(lambda: receiver.got, 60, "the batch's webhook")
    time.sleep(0.5)
    [(headers, body, _)] = receiver.got
    event = client.webhooks.unwrap(body, headers)
    assert event.type == "batch.completed" and event.data.id == batch.id
    validate("WebhookBatchCompleted", json.loads(body))
    assert client.batches.retrieve(batch.id).status == "completed"
    log = hook_stack.default_client.get(f"/v1/batches/{batch.id}/webhook_deliveries").json()
    assert [d["status"] for d in log["data"]] == ["delivered"]


def test_an_endpoint_gets_each_subscribed_event_once(hook_stack, receiver):
    key = hook_stack.new_key("endpoints")  # a key of its own: only its events
    http = hook_stack.client(key)
    made = http.post("/v1/webhook_endpoints", json={
        "url": receiver.url,
        "events": ["job.succeeded", "job.cancelled", "response.completed",
                   "response.cancelled", "batch.completed"]})
    assert made.status_code == 200, made.text
    ep = made.json()
    secret = ep.pop("secret")
    assert secret.startswith("whsec_") and ep["status"] == "enabled"
    assert "secret" not in http.get(f"/v1/webhook_endpoints/{ep['id']}").json()
    client = openai.OpenAI(base_url=hook_stack.url + "/v1", api_key=key, max_retries=0,
                           webhook_secret=secret)
    job = hook_stack.submit(http, input={"prompt": "one"})
    failed = hook_stack.submit(http, input={"prompt": "slow"}, params={"delay_ms": 1000},
                               timeout_s=0.2)  # job.failed: not subscribed
    resp = client.responses.create(model="debug/echo", input="two")
    cancelled = hook_stack.submit(http, model="local/all-MiniLM-L6-v2", kind="embed",
                                  input={"texts": ["never run: no gpu worker"]})
    http.post(f"/v1/jobs/{cancelled['id']}/cancel")
    hook_stack.wait(failed["id"], client=http)
    wait_until(lambda: len(receiver.got) >= 3, 30, "3 endpoint events")
    time.sleep(1.5)  # nothing more comes, nothing twice
    events = {}
    for headers, body, _ in receiver.got:
        event = client.webhooks.unwrap(body, headers)
        assert Webhook(secret).verify(body, headers)
        assert (event.data.id, event.type) not in events
        events[(event.data.id, event.type)] = json.loads(body)
    assert set(events) == {(job["id"], "job.succeeded"), (resp.id, "response.completed"),
                           (cancelled["id"], "job.cancelled")}
    validate("WebhookResponseCompleted", events[(resp.id, "response.completed")])
    log = http.get(f"/v1/webhook_endpoints/{ep['id']}/deliveries").json()["data"]
    assert sorted(d["type"] for d in log) == ["job.cancelled", "job.succeeded",
                                              "response.completed"]
    assert all(d["status"] == "delivered" and d["endpoint_id"] == ep["id"] for d in log)
    # Rotating changes the secret the next events are signed with; deleting stops them.
    rotated = http.post(f"/v1/webhook_endpoints/{ep['id']}/rotate_secret").json()["secret"]
    assert rotated != secret
    receiver.got.clear()
    hook_stack.submit(http, input={"prompt": "three"})
    wait_until(lambda: receiver.got, 30, "an event after the rotation")
    headers, body, _ = receiver.got[0]
    Webhook(rotated).verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body, headers)
    assert http.delete(f"/v1/webhook_endpoints/{ep['id']}").json()["deleted"] is True
    receiver.got.clear()
    done = hook_stack.submit(http, input={"prompt": "four"})
    hook_stack.wait(done["id"], client=http)
    time.sleep(1.0)
    assert receiver.got == []
    assert http.get(f"/v1/webhook_endpoints/{ep['id']}").status_code == 404


def test_an_endpoint_gets_every_event_of_a_burst(hook_stack, receiver):
    """More jobs end within the scan's look-back than one page of it holds: the scan
    reads on through them (it once read the same first 100 on every pass, and the rest
    never reached the endpoint)."""
    http = hook_stack.client(hook_stack.new_key("burst"))
    made = http.post("/v1/webhook_endpoints", json={"url": receiver.url,
                                                    "events": ["job.succeeded"]})
    assert made.status_code == 200, made.text
    jobs = [hook_stack.submit(http, input={"prompt": f"burst {i}"}) for i in range(250)]
    want = {j["id"] for j in jobs}

    def got() -> Counter:
        return Counter(json.loads(body)["data"]["id"] for _, body, _ in receiver.got)

    wait_until(lambda: set(got()) >= want, 60, "an event for each of 250 jobs")
    assert set(got()) == want and max(got().values()) == 1


def test_an_endpoint_failing_for_the_whole_window_is_disabled(make_stack):
    stack = make_stack("sqlite", env={**ENV, "MONKEY_WEBHOOK_RETRY_S": "1.5"})
    stack.start_worker("llm", concurrency=2)
    http = stack.default_client
    down = Receiver()  # never listening
    ep = http.post("/v1/webhook_endpoints", json={"url": down.url,
                                                  "events": ["job.succeeded"]}).json()
    stack.submit(input={"prompt": "x"})

    def disabled() -> bool:
        return http.get(f"/v1/webhook_endpoints/{ep['id']}").json()["status"] == "disabled"

    wait_until(disabled, 30, "the endpoint disabled")
    got = http.get(f"/v1/webhook_endpoints/{ep['id']}").json()
    assert "ConnectError" in got["disabled_reason"]
    [d] = http.get(f"/v1/webhook_endpoints/{ep['id']}/deliveries").json()["data"]
    assert d["status"] == "failed" and d["attempts"] >= 2
    # Rotating the secret switches it back on.
    assert http.post(f"/v1/webhook_endpoints/{ep['id']}/rotate_secret").json()["status"] == \
        "enabled"
