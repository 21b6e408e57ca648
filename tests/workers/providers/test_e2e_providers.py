"""Provider jobs through the whole system: POST /v1/jobs -> queue -> a real `llm` worker
-> the provider's SDK -> a fake provider server, and back over SSE."""

from __future__ import annotations

import json
import time
from contextlib import ExitStack

import pytest

from tests.conftest import streamed_text
from tests.fakes.providers import (
    FakeProviderServer,
    count_words,
    cut,
    error,
    expected_text,
    ok,
)
from tests.workers.providers.conftest import FAKE_KEY, PROVIDERS

pytestmark = pytest.mark.timeout(240)
PROMPT = "tell me a story"
ECHO = "Incorrect API key provided: {key}."


@pytest.fixture
def fakes():
    with ExitStack() as servers:
        yield {p: servers.enter_context(FakeProviderServer(p)) for p in PROVIDERS}


def provider_env(fakes: dict[str, FakeProviderServer]) -> dict[str, str]:
    env = {
        "MONKEY_PROVIDER_MAX_RETRIES": "2",
        # A worker loads each provider's SDK (up to 2 s of imports here) inside the lock
        # that its heartbeat also takes (workers/worker.py), so first jobs for several
        # providers at once outlast the suite's 3 s lease and get requeued. Lease recovery
        # is tested elsewhere; these tests are about providers.
        "MONKEY_LEASE_S": "30",
    }
    for provider, server in fakes.items():
        env[f"{provider.upper()}_API_KEY"] = FAKE_KEY
        env[f"{provider.upper()}_BASE_URL"] = server.base_url
    return env


def test_a_job_per_provider_streams_tokens_and_usage(make_stack, fakes):
    stack = make_stack("sqlite", env=provider_env(fakes))
    stack.start_worker("llm", concurrency=8)
    models = {m["id"]: m for m in stack.default_client.get("/v1/models").json()["data"]}
    assert all(models[f"{p}/*"]["configured"] for p in PROVIDERS)

    for fake in fakes.values():
        fake.script(ok(tokens=6, delay=0.02))
    jobs = {p: stack.submit(model=f"{p}/fake-model", input={"prompt": PROMPT},
                            params={"max_tokens": 50}) for p in PROVIDERS}
    for provider, job in jobs.items():
        events = stack.events(job["id"])
        assert streamed_text(events) == expected_text(6), provider
        done = events[-1][2]
        assert done["status"] == "succeeded", (provider, done)
        assert done["output"]["text"] == expected_text(6)
        assert done["output"]["usage"] == {"prompt_tokens": count_words(PROMPT),
                                           "completion_tokens": 6,
                                           "total_tokens": count_words(PROMPT) + 6}
        assert done["metrics"]["completion_tokens"] == 6 and done["metrics"]["ttft_ms"] > 0
        (request,) = fakes[provider].requests
        assert request.key == FAKE_KEY


def test_provider_failures_end_to_end(make_stack, fakes):
    fake = fakes["openai"]
    stack = make_stack("sqlite", env=provider_env(fakes))
    stack.start_worker("llm", concurrency=4)

    def run(*script, **body) -> tuple[dict, list]:
        fake.script(*script)
        job = stack.submit(model="openai/fake-model", input={"prompt": PROMPT}, **body)
        events = stack.events(job["id"])
        return events[-1][2], events

    # A 429 with Retry-After, then the answer: the job succeeds, the retry is counted.
    done, _ = run(error(429, retry_after=0.5), ok(tokens=3))
    assert done["status"] == "succeeded" and done["output"]["text"] == expected_text(3)
    assert done["metrics"]["retries"] == 1

    # 500 beyond the bound (2 retries): provider_unavailable after three requests.
    before = len(fake.requests)
    done, _ = run(error(500), error(500), error(500))
    assert done["status"] == "failed" and done["error"]["type"] == "provider_unavailable"
    assert len(fake.requests) - before == 3

    # A 401 is not retried, and the key it echoes shows nowhere.
    before = len(fake.requests)
    done, events = run(error(401, message=ECHO))
    assert done["status"] == "failed" and done["error"]["type"] == "provider_auth"
    assert len(fake.requests) - before == 1
    assert FAKE_KEY not in json.dumps(events)

    # A stream cut mid-way: retried, the client is told to restart, the text is whole.
    done, events = run(cut(after=3, tokens=6), ok(tokens=6))
    assert done["status"] == "succeeded" and done["output"]["text"] == expected_text(6)
    assert any(k == "status" and d.get("restarted") for _, k, d in events)
    assert streamed_text(events) == expected_text(6)

    assert FAKE_KEY not in stack.logs()


def test_cancel_closes_the_provider_stream(make_stack, fakes):
    fake = fakes["anthropic"]
    stack = make_stack("sqlite", env=provider_env(fakes))
    stack.start_worker("llm", concurrency=4)
    fake.script(ok(tokens=300, delay=0.1))
    job = stack.submit(model="anthropic/fake-model", input={"prompt": PROMPT})
    request = fake.wait_tokens_sent(3, timeout=60)

    cancelled_at = time.monotonic()
    assert stack.client().post(f"/v1/jobs/{job['id']}/cancel").status_code == 202
    assert request.client_closed.wait(10), "the provider never saw the connection close"
    print(f"\nprovider connection closed {request.client_closed_at - cancelled_at:.3f} s "
          "after POST /cancel")
    done = stack.wait(job["id"], timeout=10)
    assert done["status"] == "cancelled"
    assert done["output"]["finish_reason"] == "cancelled"
    assert expected_text(300).startswith(done["output"]["text"])
    assert request.sent_tokens < 300


@pytest.mark.slow
def test_200_slow_provider_jobs_through_one_llm_worker(make_stack, fakes):
    jobs_n, concurrency = 200, 32
    fake = fakes["openai"]
    fake.default = ok(tokens=5, delay=0.2)  # one second each
    stack = make_stack("sqlite", env=provider_env(fakes))
    stack.start_worker("llm", concurrency=concurrency)

    started = time.monotonic()
    jobs = [stack.submit(model="openai/fake-model", input={"prompt": f"job {i}"})
            for i in range(jobs_n)]
    submitted = time.monotonic() - started
    finished = [stack.wait(job["id"], timeout=180) for job in jobs]
    wall = time.monotonic() - started
    print(f"\n{jobs_n} provider jobs x 1 s, one llm worker at --concurrency {concurrency}: "
          f"{wall:.1f} s wall (submitting took {submitted:.1f} s)")

    assert all(d["status"] == "succeeded" for d in finished)
    assert all(d["output"]["text"] == expected_text(5) for d in finished)
    assert len(fake.requests) == jobs_n
    assert wall < 60, f"{jobs_n} jobs took {wall:.1f} s"
