"""Where the API's other surfaces land in the browser: the jobs list's search, a
response's page (its stream and its cancel), a key's webhook endpoints and their
delivery log, and the operators' charts drawn from the control process's history."""

from __future__ import annotations

import json
import re

import openai
import pytest
from playwright.sync_api import Page, expect

from tests.api.test_webhooks import Receiver
from tests.conftest import wait_until
from tests.web.ui import enter_key, words

pytestmark = pytest.mark.slow


def test_search_filters_the_jobs_list_and_survives_a_reload(page: Page, web_stack):
    enter_key(page, web_stack.key)
    fib = web_stack.submit(input={"prompt": "Write a Fibonacci function"})
    sort = web_stack.submit(input={"messages": [{"role": "user", "content": "Explain quicksort"}]})
    other = web_stack.submit(input={"prompt": "nothing to see"})
    for job in (fib, sort, other):
        web_stack.wait(job["id"])
    page.goto("/jobs/")
    expect(page.locator(f'[data-job-id="{other["id"]}"]')).to_have_count(1)
    search = page.get_by_label("Search")
    search.fill("QUICKSORT")
    search.press("Enter")
    expect(page).to_have_url(re.compile(r"/jobs/\?q=QUICKSORT$"))
    expect(page.locator(f'[data-job-id="{sort["id"]}"]')).to_have_count(1)
    expect(page.get_by_test_id("job-row")).to_have_count(1)

    page.reload()
    expect(page.get_by_label("Search")).to_have_value("QUICKSORT")
    expect(page.get_by_test_id("job-row")).to_have_count(1)
    expect(page.locator(f'[data-job-id="{sort["id"]}"]')).to_have_count(1)

    # With another filter; then by a fragment of an id.
    page.get_by_label("Status").select_option("failed")
    expect(page).to_have_url(re.compile(r"q=QUICKSORT&status=failed"))
    expect(page.get_by_test_id("no-jobs")).to_contain_text("match these filters")
    page.goto(f"/jobs/?q={fib['id'][-12:]}")
    expect(page.get_by_test_id("job-row")).to_have_count(1)
    expect(page.locator(f'[data-job-id="{fib["id"]}"]')).to_have_count(1)
    assert not page.page_errors, page.page_errors


def _sdk(web_stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=web_stack.url + "/v1", api_key=web_stack.key)


def test_a_response_page_streams_its_events_and_cancels(page: Page, web_stack):
    enter_key(page, web_stack.key)
    sdk = _sdk(web_stack)
    said = words(60, "r")
    resp = sdk.responses.create(model="debug/echo", input=said, instructions="Be brief",
                                background=True, extra_body={"delay_ms": 150})
    job_id = "job_" + resp.id.removeprefix("resp_")

    # From its job's page to its own.
    page.goto(f"/job/?id={job_id}")
    page.get_by_test_id("response-link").click()
    page.wait_for_url(f"**/response/?id={resp.id}")
    expect(page.get_by_test_id("response-status")).to_have_text("in_progress", timeout=20_000)
    expect(page.get_by_test_id("input-items")).to_contain_text(said)
    expect(page.get_by_test_id("response-instructions")).to_contain_text("Be brief")
    deltas = page.locator('[data-testid="response-event"][data-type="response.output_text.delta"]')
    expect(deltas.nth(4)).to_be_visible(timeout=20_000)
    types = [r.get_attribute("data-type") for r in page.get_by_test_id("response-event").all()]
    assert types[:2] == ["response.created", "response.in_progress"], types
    expect(page.get_by_test_id("job-output")).to_contain_text("r0 r1")

    page.get_by_role("button", name="Cancel response").click()
    expect(page.get_by_role("button", name="Keep it running")).to_be_focused()
    page.get_by_role("button", name="Yes, cancel it").click()
    expect(page.get_by_test_id("response-status")).to_have_text("cancelled", timeout=20_000)
    expect(page.locator('[data-type="response.cancelled"]')).to_have_count(1)
    expect(page.get_by_role("button", name="Cancel response")).to_have_count(0)
    assert sdk.responses.retrieve(resp.id).status == "cancelled"
    shown = page.get_by_test_id("job-output").inner_text().strip()
    assert shown and len(shown.split()) < 60, shown  # the text so far, not all of it
    page.get_by_test_id("job-link").click()
    expect(page.get_by_test_id("job-status")).to_have_text("cancelled")

    # A finished response: its page replays the events and shows the whole text.
    done = sdk.responses.create(model="debug/echo", input="all of it")
    page.goto(f"/response/?id={done.id}")
    expect(page.get_by_test_id("response-status")).to_have_text("completed")
    expect(page.locator('[data-type="response.completed"]')).to_have_count(1)
    expect(page.get_by_test_id("job-output")).to_have_text(done.output_text)
    expect(page.get_by_role("button", name="Cancel response")).to_have_count(0)
    assert not page.page_errors, page.page_errors


def test_webhook_endpoint_secret_once_and_a_real_delivery_in_its_log(page: Page, web_stack):
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    enter_key(page, web_stack.key)
    receiver = Receiver().start()
    try:
        page.goto("/webhooks/")
        expect(page).to_have_title("Webhooks · Monkey Coder")
        page.get_by_label("URL").fill(receiver.url)
        page.get_by_label("job.failed").uncheck()
        page.get_by_role("button", name="Create endpoint").click()
        shown = page.get_by_test_id("endpoint-secret")
        expect(shown).to_be_visible()
        secret = page.get_by_test_id("secret-value").inner_text()
        assert secret.startswith("whsec_"), secret
        shown.get_by_role("button", name="Copy secret").click()
        assert page.evaluate("navigator.clipboard.readText()") == secret
        row = page.get_by_test_id("endpoint-row")
        expect(row).to_have_count(1)
        endpoint_id = row.get_attribute("data-endpoint-id")
        expect(row).to_contain_text("job.succeeded")
        expect(row).not_to_contain_text("job.failed")
        listed = web_stack.default_client.get("/v1/webhook_endpoints").json()["data"]
        assert [(e["id"], e["events"], e.get("secret")) for e in listed] == [
            (endpoint_id, ["job.succeeded"], None)]

        # Shown once: a reload does not bring it back.
        page.reload()
        expect(page.get_by_test_id("endpoint-row")).to_have_count(1)
        expect(page.get_by_test_id("endpoint-secret")).to_have_count(0)

        # A job ends: the receiver gets it, signed with that secret, and the log says so.
        job = web_stack.submit(input={"prompt": "hooked"})
        wait_until(lambda: receiver.got, 30, "the webhook delivery")
        headers, body, _ = receiver.got[0]
        event = openai.OpenAI(base_url=web_stack.url + "/v1", api_key="x",
                              webhook_secret=secret).webhooks.unwrap(body, headers)
        assert event.type == "job.succeeded" and json.loads(body)["data"]["id"] == job["id"]
        page.get_by_role("link", name="Deliveries").click()
        page.wait_for_url(f"**/webhook/?id={endpoint_id}")
        delivery = page.locator(f'[data-delivery-id="{headers["webhook-id"]}"]')
        expect(delivery.get_by_test_id("delivery-status")).to_have_text("delivered")
        expect(delivery.get_by_test_id("delivery-code")).to_have_text("200")
        expect(delivery).to_contain_text("job.succeeded")
        expect(delivery.get_by_test_id("delivery-next")).to_have_text("-")

        # Rotate: a new secret, shown once; delete: gone.
        page.get_by_role("link", name="All webhook endpoints").click()
        page.get_by_role("button", name="Rotate secret").click()
        page.get_by_role("button", name="Yes, rotate it").click()
        expect(page.get_by_test_id("endpoint-secret")).to_contain_text("has a new secret")
        rotated = page.get_by_test_id("secret-value").inner_text()
        assert rotated.startswith("whsec_") and rotated != secret
        page.get_by_role("button", name="Delete").click()
        page.get_by_role("button", name="Yes, delete it").click()
        expect(page.get_by_test_id("no-endpoints")).to_be_visible()
        expect(page.get_by_test_id("endpoint-secret")).to_have_count(0)
        assert web_stack.default_client.get("/v1/webhook_endpoints").json()["data"] == []
        assert not page.page_errors, page.page_errors
    finally:
        receiver.stop()


def start_batch(web_stack, lines: int, delay_ms: int, n_words: int) -> str:
    body = {"model": "debug/echo", "delay_ms": delay_ms,
            "messages": [{"role": "user", "content": words(n_words)}]}
    jsonl = "".join(json.dumps({"custom_id": f"c{i}", "method": "POST",
                                "url": "/v1/chat/completions", "body": body}) + "\n"
                    for i in range(lines))
    c = web_stack.default_client
    up = c.post("/v1/files", data={"purpose": "batch"},
                files={"file": ("lines.jsonl", jsonl.encode(), "application/jsonl")})
    assert up.status_code == 200, up.text
    made = c.post("/v1/batches", json={"input_file_id": up.json()["id"],
                                       "endpoint": "/v1/chat/completions",
                                       "completion_window": "24h"})
    assert made.status_code == 200, made.text
    return made.json()["id"]


def _points(path: str) -> list[tuple[float, float]]:
    return [(float(x), float(y)) for x, y in re.findall(r"[ML]([\d.]+),([\d.]+)", path)]


def test_operators_charts_draw_from_the_history_during_a_batch(page: Page, web_stack):
    if web_stack.default_client.get("/v1/batches").status_code == 404:
        pytest.skip("this server has no batches")
    enter_key(page, web_stack.key)
    batch_id = start_batch(web_stack, lines=40, delay_ms=100, n_words=10)
    try:
        page.goto("/operators/")
        expect(page).to_have_title("Queues and workers · Monkey Coder")
        running = page.get_by_test_id("chart-llm-running").get_by_role("img")
        # The control process's samples: the running line rises above 0 ...
        expect(running).to_have_attribute("aria-label", re.compile(r"now: running [1-9]"),
                                          timeout=30_000)
        throughput = page.get_by_test_id("chart-llm-throughput").get_by_role("img")
        # ... and lines finish, so throughput is above 0 per minute.
        expect(throughput).to_have_attribute("aria-label", re.compile(r"finished [1-9][\d.]*/min"),
                                             timeout=30_000)
        expect(page.get_by_test_id("history-note")).to_contain_text("a sample every 1 s")
        line = page.get_by_test_id("chart-llm-running").locator("path").first
        points = _points(line.get_attribute("d"))
        assert len(points) >= 2, points
        assert max(y for _, y in points) > min(y for _, y in points), points  # it moved
        assert [x for x, _ in points] == sorted(x for x, _ in points)
        for chart in ("depth", "oldest", "running", "throughput"):
            expect(page.get_by_test_id(f"chart-gpu-{chart}")).to_be_visible()
        history = web_stack.default_client.get("/v1/ops/history").json()["data"]
        llm = [next(q for q in s["queues"] if q["queue"] == "llm") for s in history]
        assert any(q["running"] > 0 for q in llm) and sum(q["finished"] for q in llm) > 0
        assert not page.page_errors, page.page_errors
    finally:
        web_stack.default_client.post(f"/v1/batches/{batch_id}/cancel")
