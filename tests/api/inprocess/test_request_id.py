"""`x-request-id` on every response (api/request_id.py), in-process: generated, or the
client's own when it is sane; read by the official openai SDK."""

from __future__ import annotations

import openai
import pytest
from fastapi.testclient import TestClient

ID = "x-request-id"


@pytest.mark.parametrize("method, path, kw, status", [
    ("GET", "/healthz", {}, 200),
    ("GET", "/v1/models", {}, 200),
    ("POST", "/v1/jobs", {"json": {"model": "debug/echo", "input": {"prompt": "x"}}}, 202),
    ("POST", "/v1/jobs", {"json": {"model": "nope/x", "input": {"prompt": "x"}}}, 422),
    ("GET", "/v1/jobs/job_nope", {}, 404),
    ("PUT", "/v1/jobs", {}, 405),
    ("POST", "/v1/jobs", {"content": b"x" * 2_000_000}, 413),
    ("GET", "/v1/jobs", {"headers": {"Authorization": "Bearer nope"}}, 401),
])
def test_every_answer_carries_a_new_request_id(inproc, method, path, kw, status):
    first = inproc.client.request(method, path, **kw)
    second = inproc.client.request(method, path, **kw)
    assert first.status_code == second.status_code == status, first.text
    assert first.headers[ID].startswith("req_") and second.headers[ID].startswith("req_")
    assert first.headers[ID] != second.headers[ID]
    assert len(first.headers.get_list(ID)) == 1


def test_an_event_stream_carries_it_too(inproc):
    job = inproc.submit()
    inproc.client.post(f"/v1/jobs/{job['id']}/cancel")
    with inproc.client.stream("GET", f"/v1/jobs/{job['id']}/events",
                              headers={ID: "trace-42"}) as resp:
        assert resp.status_code == 200 and resp.headers[ID] == "trace-42"


@pytest.mark.parametrize("sent, kept", [
    ("abc-123", True), ("0f8c6a2e-6c1b-4a8e-9d9c-2b7b0c0b8e11", True),
    ("trace:svc/a.b_c+d=", True), ("r" * 128, True),
    ("r" * 129, False), ("has space", False), ("-leading", False), ("", False),
    ("naïve", False), ("a\tb", False),
])
def test_the_clients_own_id_is_kept_when_sane(inproc, sent, kept):
    resp = inproc.client.get("/v1/models", headers={ID: sent.encode("utf-8")})
    assert resp.status_code == 200
    assert (resp.headers[ID] == sent) is kept
    if not kept:
        assert resp.headers[ID].startswith("req_")


def test_an_unhandled_error_is_a_json_500_with_its_id(inproc):
    app = inproc.client.app

    async def boom() -> None:
        raise RuntimeError("boom")

    app.add_api_route("/v1/test-boom", boom)
    route = app.router.routes.pop()
    app.router.routes.insert(0, route)  # before the /v1/{path} catch-all
    try:
        client = TestClient(app, raise_server_exceptions=False)  # the app is already up
        resp = client.get("/v1/test-boom", headers={ID: "boom-1"})
    finally:
        app.router.routes.remove(route)
    assert resp.status_code == 500 and resp.headers[ID] == "boom-1"
    assert resp.json()["error"]["type"] == "internal_error" and "boom" not in resp.text


def test_the_openai_sdk_reads_it(inproc):
    key = inproc.client.headers["Authorization"].removeprefix("Bearer ")
    client = openai.OpenAI(base_url=f"{inproc.client.base_url}/v1", api_key=key,
                           http_client=inproc.client, max_retries=0)
    page = client.models.list()
    assert page._request_id and page._request_id.startswith("req_")
    raw = client.models.with_raw_response.list(extra_headers={ID: "mine-1"})
    assert raw.request_id == "mine-1"
    with pytest.raises(openai.NotFoundError) as err:
        client.files.retrieve("file_nope")
    assert err.value.request_id and err.value.request_id.startswith("req_")
