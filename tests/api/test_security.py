"""Hostile or careless callers: every route needs a key, per-key limits answer 429 with
Retry-After, CORS only for configured origins, and no secret or prompt leaks into
logs, broker messages or error bodies."""

from __future__ import annotations

import re

import httpx
import redis

from api.main import create_app
from common.settings import Settings
from tests.conftest import wait_until

OPEN = {"/healthz", "/readyz", "/metrics", "/openapi.json", "/docs", "/docs/oauth2-redirect",
        "/redoc"}


def api_routes() -> list[tuple[str, str]]:
    """Every route of the app: those in its OpenAPI document, and the undocumented
    catch-all for unknown /v1 paths."""
    app = create_app(Settings(DATABASE_URL="sqlite:///unused.db", MONKEY_WEB_DIR="/nonexistent"))
    found = [("GET", "/v1/x"), ("POST", "/v1/x")]
    for path, ops in app.openapi()["paths"].items():
        if path not in OPEN:
            found += [(m.upper(), re.sub(r"\{[^}]+\}", "x", path)) for m in ops]
    return found


def test_every_route_but_health_and_metrics_needs_a_key(make_stack):
    stack = make_stack("sqlite")
    routes = api_routes()
    assert len(routes) > 15 and ("POST", "/v1/jobs") in routes and ("GET", "/v1/x") in routes
    with httpx.Client(base_url=stack.url) as c:
        for method, path in routes:
            resp = c.request(method, path, json={} if method == "POST" else None)
            assert resp.status_code == 401, (method, path, resp.status_code)
            assert resp.json()["error"]["type"] == "unauthorized"
        for path in ("/healthz", "/readyz", "/metrics"):
            assert c.get(path).status_code == 200


def test_requests_per_key_are_rate_limited(make_stack):
    stack = make_stack("sqlite", env={"MONKEY_RATE_LIMIT_PER_S": "1",
                                      "MONKEY_RATE_LIMIT_BURST": "3"})
    c = stack.client()
    codes = [c.get("/v1/jobs").status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    limited = c.get("/v1/jobs")
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1
    assert limited.json()["error"]["type"] == "rate_limited"
    assert "MONKEY_RATE_LIMIT_PER_S" in limited.json()["error"]["message"]
    # Another key has its own bucket.
    assert stack.client(stack.new_key("other")).get("/v1/jobs").status_code == 200


def test_queued_jobs_per_key_are_capped(make_stack):
    stack = make_stack("sqlite", env={"MONKEY_MAX_QUEUED_PER_KEY": "2"})
    c = stack.client()
    body = {"model": "local/all-MiniLM-L6-v2", "kind": "embed", "input": {"texts": ["q"]}}
    first = c.post("/v1/jobs", json=body).json()  # no gpu worker here: they stay queued
    assert c.post("/v1/jobs", json=body).status_code == 202
    refused = c.post("/v1/jobs", json=body)
    assert refused.status_code == 429 and refused.headers["Retry-After"]
    assert "MONKEY_MAX_QUEUED_PER_KEY" in refused.json()["error"]["message"]
    assert len(c.get("/v1/jobs").json()["data"]) == 2  # the refused one was not written
    c.post(f"/v1/jobs/{first['id']}/cancel")
    assert c.post("/v1/jobs", json=body).status_code == 202


def test_open_event_streams_per_key_are_capped(make_stack):
    stack = make_stack("sqlite", env={"MONKEY_MAX_STREAMS_PER_KEY": "1"})
    c = stack.client()
    job = stack.submit(model="local/all-MiniLM-L6-v2", kind="embed", input={"texts": ["q"]})
    with httpx.Client(base_url=stack.url, headers={"Authorization": f"Bearer {stack.key}"},
                      timeout=30) as first:
        with first.stream("GET", f"/v1/jobs/{job['id']}/events") as resp:
            assert resp.status_code == 200
            lines = resp.iter_lines()  # kept: dropping the iterator closes the stream
            assert next(lines) == "retry: 1000"
            second = c.get(f"/v1/jobs/{job['id']}/events", timeout=5)
            assert second.status_code == 429 and second.headers["Retry-After"]
            assert "MONKEY_MAX_STREAMS_PER_KEY" in second.json()["error"]["message"]
    # Closing the first frees its slot; cancelling ends the next stream with `done`.
    c.post(f"/v1/jobs/{job['id']}/cancel")
    wait_until(lambda: stack.events(job["id"])[-1][1] == "done", 10, "slot freed")


def test_cors_only_for_configured_origins(make_stack):
    stack = make_stack("sqlite", env={"MONKEY_CORS_ORIGINS": "http://ui.example"})
    headers = {"Access-Control-Request-Method": "POST",
               "Access-Control-Request-Headers": "authorization,content-type"}
    ok = httpx.options(f"{stack.url}/v1/jobs", headers={"Origin": "http://ui.example", **headers})
    assert ok.headers.get("access-control-allow-origin") == "http://ui.example"
    assert "authorization" in ok.headers.get("access-control-allow-headers", "").lower()
    evil = httpx.options(f"{stack.url}/v1/jobs",
                         headers={"Origin": "http://evil.example", **headers})
    assert "access-control-allow-origin" not in evil.headers
    got = stack.client().get("/v1/jobs", headers={"Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in got.headers


def test_no_secret_or_prompt_in_logs_broker_or_error_bodies(make_stack):
    secret = "sk-canary-SECRET-0123456789abcdef"
    canary = "PROMPT-CANARY-7f3e"
    env = {"OPENAI_API_KEY": secret, "OPENAI_BASE_URL": "http://127.0.0.1:9/v1",
           "MONKEY_PROVIDER_MAX_RETRIES": "0"}
    stack = make_stack("sqlite", env=env)
    stack.start_worker("llm", concurrency=4)
    c = stack.client()

    # A queued job's broker message carries its id and model, not its input.
    waiting = stack.submit(model="local/all-MiniLM-L6-v2", kind="embed",
                           input={"texts": [canary]})
    r = redis.Redis.from_url(stack.redis_url)
    wait_until(lambda: r.llen("gpu") > 0, 10, "the task on the broker")
    messages = r.lrange("gpu", 0, -1)
    assert any(waiting["id"].encode() in m for m in messages)
    assert not any(canary.encode() in m for m in messages)

    echo = stack.submit(input={"prompt": f"say {canary} please"})
    done = stack.wait(echo["id"])
    assert done["output"]["text"] == f"say {canary} please"
    failed = stack.wait(stack.submit(model="openai/gpt-4o-mini",
                                     input={"prompt": f"{canary} to openai"})["id"])
    assert failed["status"] == "failed"
    assert failed["error"]["type"] == "provider_unavailable"
    assert secret not in str(failed)

    bad = c.post("/v1/jobs", json={"model": "debug/echo", "input": {"prompt": [canary]}})
    assert bad.status_code == 422 and canary not in bad.text
    unknown = c.post("/v1/jobs", json={"model": f"nope/{canary}", "input": {"prompt": "x"}})
    assert unknown.status_code == 422
    assert canary not in httpx.get(f"{stack.url}/metrics").text

    logs = stack.logs() + "".join(p.log_path.read_text(errors="replace") for p in stack.procs)
    assert "job started" in logs and echo["id"] in logs  # the logs are really read
    assert secret not in logs
    assert canary not in logs
