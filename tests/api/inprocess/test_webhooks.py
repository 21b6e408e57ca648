"""Webhooks in-process (see conftest.py): what a job with a webhook writes, what is
refused, and the signature against the official SDK's verifier. Delivery itself, with
a real receiver, retries and the control process, is tests/api/test_webhooks.py."""

from __future__ import annotations

import time

import openai
import pytest
from standardwebhooks.webhooks import Webhook

from common.webhooks import headers, new_secret, sign


def test_signatures_verify_with_the_sdk_and_only_as_sent():
    secret = new_secret()
    body = b'{"id":"evt_1","object":"event","type":"job.succeeded","data":{"id":"job_1"}}'
    now = int(time.time())
    h = headers(secret, "evt_1", now, body)
    client = openai.OpenAI(api_key="x", webhook_secret=secret)
    assert client.webhooks.unwrap(body, h).id == "evt_1"
    assert h["webhook-signature"] == sign(secret, "evt_1", now, body)
    assert Webhook(secret).verify(body, h)["id"] == "evt_1"  # the reference implementation
    with pytest.raises(openai.InvalidWebhookSignatureError):
        client.webhooks.verify_signature(body + b" ", h)
    with pytest.raises(openai.InvalidWebhookSignatureError):
        client.webhooks.verify_signature(body, {**h, "webhook-id": "evt_2"})


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:9/hook", "http://localhost/hook", "http://10.1.2.3/x",
    "http://169.254.169.254/latest/meta-data", "http://[::1]/x", "http://192.168.0.1/x",
    "http://[::ffff:127.0.0.1]/x",
])
def test_private_urls_are_refused_without_the_setting(inproc, url):
    # 422 on the native API, 400 on OpenAI's (as OpenAI answers a bad request).
    for path, body, status in [
            ("/v1/jobs", {"model": "debug/echo", "input": {"prompt": "x"}, "webhook": url}, 422),
            ("/v1/responses", {"model": "debug/echo", "input": "x", "webhook": url,
                               "background": True}, 400)]:
        resp = inproc.client.post(path, json=body)
        assert resp.status_code == status, resp.text
        assert "MONKEY_WEBHOOK_ALLOW_PRIVATE" in resp.json()["error"]["message"]
    assert inproc.stub.take() == []
    assert inproc.client.get("/v1/jobs").json()["data"] == []


@pytest.mark.parametrize("body, status", [
    ({"webhook": "ftp://example.com/x"}, 422),
    ({"webhook": "http://[abc/x"}, 422),
    ({"webhook": "http://example.com:port/x"}, 422),
    ({"webhook": "http://" + "a" * 70 + ".example/x"}, 422),
    ({"webhook": "http://does-not-resolve.invalid/x"}, 422),
    ({"webhook": "http://user:pw@example.com/x"}, 422),
    ({"webhook": "https://example.com/x", "webhook_events_filter": ["output"]}, 422),
    ({"webhook": "https://example.com/x", "webhook_events_filter": []}, 422),
])
def test_bad_webhooks_are_refused(inproc, body, status):
    resp = inproc.client.post("/v1/jobs", json={"model": "debug/echo",
                                                "input": {"prompt": "x"}, **body})
    assert resp.status_code == status, resp.text
    assert inproc.stub.take() == []


def test_the_secret_is_per_key_and_stable(inproc):
    first = inproc.client.get("/v1/webhooks/default/secret").json()["key"]
    assert first.startswith("whsec_")
    assert inproc.client.get("/v1/webhooks/default/secret").json()["key"] == first
    other = inproc.client.get("/v1/webhooks/default/secret",
                              headers=inproc.auth(inproc.new_key("o"))).json()["key"]
    assert other != first


def test_the_delivery_log_is_the_keys_own(inproc):
    job = inproc.submit()
    assert inproc.client.get(f"/v1/jobs/{job['id']}/webhook_deliveries").json() == {
        "object": "list", "data": []}
    other = inproc.auth(inproc.new_key("other"))
    assert inproc.client.get(f"/v1/jobs/{job['id']}/webhook_deliveries",
                             headers=other).status_code == 404


def test_a_batch_with_a_private_webhook_is_refused(inproc):
    f = inproc.client.post("/v1/files", data={"purpose": "batch"},
                           files={"file": ("b.jsonl", b'{"custom_id": "a"}\n')}).json()
    resp = inproc.client.post("/v1/batches", json={
        "input_file_id": f["id"], "endpoint": "/v1/responses", "completion_window": "24h",
        "webhook": "http://127.0.0.1:1/x"})
    assert resp.status_code == 400, resp.text  # an OpenAI-compatible route: 400, as OpenAI's
    assert resp.json()["error"]["type"] == "invalid_request"
    assert inproc.client.get("/v1/batches").json()["data"] == []
    assert inproc.client.get("/v1/batches/batch_nope/webhook_deliveries").status_code == 404


def test_webhook_endpoints_crud(inproc):
    refused = inproc.client.post("/v1/webhook_endpoints", json={
        "url": "http://127.0.0.1/x", "events": ["job.succeeded"]})
    assert refused.status_code == 422
    assert inproc.client.post("/v1/webhook_endpoints", json={
        "url": "https://example.com/x", "events": ["job.started"]}).status_code == 422
    assert inproc.client.post("/v1/webhook_endpoints", json={
        "url": "https://example.com/x", "events": []}).status_code == 422
    assert inproc.client.get("/v1/webhook_endpoints").json() == {"object": "list", "data": []}
    other = inproc.auth(inproc.new_key("other"))
    for method, path in [("GET", ""), ("DELETE", ""), ("POST", "/rotate_secret"),
                         ("GET", "/deliveries")]:
        assert inproc.client.request(method, f"/v1/webhook_endpoints/we_nope{path}",
                                     headers=other).status_code == 404
