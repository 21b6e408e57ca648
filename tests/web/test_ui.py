"""The web UI in a real browser against the real stack (API + llm worker + Redis)."""

from __future__ import annotations

import json
import re
import signal

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.conftest import wait_until
from tests.web.conftest import ARTIFACTS
from tests.web.ui import enter_key, observe, output, status, submit_echo, words

pytestmark = pytest.mark.slow


def running_growth(samples: list[tuple[str, str]]) -> list[int]:
    """Distinct text lengths seen while the job was running, in order. Trailing blanks do
    not count: the text shows raw until the markdown renderer has loaded, and markdown
    drops the blank after the last word ('word0 ' raw, then 'word0' rendered)."""
    lengths: list[int] = []
    for st, text in samples:
        shown = len(text.rstrip())
        if st == "running" and (not lengths or shown != lengths[-1]):
            lengths.append(shown)
    return lengths


def test_wrong_key_is_refused_with_a_clear_message(page: Page, web_stack):
    page.goto("/key/")
    page.get_by_role("textbox", name="API key").focus()  # keyboard only: type, then Enter
    page.keyboard.type("mk-this-key-does-not-exist")
    page.keyboard.press("Enter")
    error = page.get_by_test_id("error")
    expect(error).to_contain_text("The API refused this key")
    expect(error).to_contain_text("invalid API key")
    expect(page.get_by_test_id("stored-key")).to_have_text("No key is stored yet.")

    # A stored key the server no longer accepts: the page says so and links to the fix.
    page.evaluate("localStorage.setItem('monkey.apiKey', 'mk-revoked')")
    page.goto("/jobs/")
    expect(page.get_by_test_id("error")).to_contain_text("invalid API key")
    expect(page.get_by_role("link", name="Enter a valid API key")).to_be_visible()


def test_stream_cancel_and_list(page: Page, web_stack):
    enter_key(page, web_stack.key)

    # A slow job: its words must appear one by one while it runs.
    prompt = words(20, "word")
    streamed_id = submit_echo(page, prompt, delay_ms=150)
    shot = {}

    def grown(samples):
        growth = running_growth(samples)
        if len(growth) >= 4 and "taken" not in shot:
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "job-streaming.png"), full_page=True)
            shot["taken"] = status(page)
            shot["ttft"] = page.get_by_test_id("ttft-ms").inner_text()
        return len(growth) >= 5

    samples = observe(page, grown, timeout=30, every=0.1)
    growth = running_growth(samples)
    assert len(growth) >= 5 and growth == sorted(growth), samples
    assert shot.get("taken") == "running"
    assert shot["ttft"].endswith("ms"), shot  # estimated live from the stream's event times
    for st, text in samples:
        assert prompt.startswith(text), (st, text)  # a prefix: in order, no repeats
    expect(page.get_by_test_id("job-status")).to_have_text("succeeded", timeout=20_000)
    assert output(page) == prompt
    expect(page.get_by_test_id("completion-tokens")).to_have_text("20")
    expect(page.get_by_test_id("ttft-ms")).not_to_have_text("-")
    expect(page.get_by_test_id("tokens-per-s")).not_to_have_text("-")

    # Another one, cancelled mid-stream: cancelling, then cancelled.
    long_prompt = words(80, "c")
    cancelled_id = submit_echo(page, long_prompt, delay_ms=150)
    observe(page, lambda s: len(s[-1][1].split()) >= 3, timeout=30)
    page.get_by_role("button", name="Cancel job").click()
    # It asks first, with the harmless answer focused: Enter keeps the job running.
    expect(page.get_by_role("button", name="Keep it running")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.get_by_test_id("job-status")).to_have_text("running")
    page.get_by_role("button", name="Cancel job").click()
    page.get_by_role("button", name="Yes, cancel it").click()
    expect(page.get_by_test_id("job-status")).to_have_text("cancelled", timeout=20_000)
    history = page.get_by_test_id("status-history").locator("li")
    steps = [li.get_attribute("data-status") for li in history.all()]
    assert steps[-2:] == ["cancelling", "cancelled"], steps
    text = output(page)
    assert 3 <= len(text.split()) < 80 and long_prompt.startswith(text), text
    expect(page.get_by_test_id("finish-reason")).to_have_text("cancelled")
    expect(page.get_by_role("button", name="Cancel job")).to_have_count(0)

    # The jobs list shows both, with their statuses; the filter narrows it.
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Jobs").click()
    row = page.locator(f'[data-testid="job-row"][data-job-id="{streamed_id}"]')
    expect(row.get_by_test_id("job-row-status")).to_have_text("succeeded")
    row = page.locator(f'[data-testid="job-row"][data-job-id="{cancelled_id}"]')
    expect(row.get_by_test_id("job-row-status")).to_have_text("cancelled")
    page.get_by_label("Status").select_option("cancelled")
    expect(page.locator(f'[data-job-id="{streamed_id}"]')).to_have_count(0)
    expect(page.locator(f'[data-job-id="{cancelled_id}"]')).to_have_count(1)
    row.get_by_role("link").click()
    expect(page.get_by_test_id("job-status")).to_have_text("cancelled")
    assert not page.page_errors, page.page_errors


def test_queued_job_shows_its_queue_and_cancels_at_once(page: Page, web_stack):
    # This stack runs no gpu worker: a local model's job waits, and the page says why.
    enter_key(page, web_stack.key)
    page.goto("/")
    page.get_by_label("Model", exact=True).select_option("local/all-MiniLM-L6-v2")
    page.get_by_label("Texts to embed (one per line)").fill("first text\nsecond text")
    page.get_by_role("button", name="Submit job").click()
    page.wait_for_url("**/job/?id=*")
    expect(page.get_by_test_id("job-status")).to_have_text("queued")
    expect(page.get_by_test_id("no-workers")).to_contain_text("monkey worker --queues gpu")
    expect(page.get_by_test_id("queue-ms")).not_to_have_text("-")
    page.get_by_role("button", name="Cancel job").click()
    page.get_by_role("button", name="Yes, cancel it").click()
    expect(page.get_by_test_id("job-status")).to_have_text("cancelled")
    expect(page.get_by_test_id("queue-info")).to_have_count(0)
    steps = [li.get_attribute("data-status") for li in page.locator("ol.history li").all()]
    assert steps == ["queued", "cancelled"], steps


def test_jobs_list_refreshes_live(page: Page, web_stack):
    enter_key(page, web_stack.key)
    job = web_stack.submit(kind="generate", input={"prompt": words(25)}, params={"delay_ms": 100})
    page.goto("/jobs/")
    badge = page.locator(f'[data-job-id="{job["id"]}"]').get_by_test_id("job-row-status")
    expect(badge).to_have_text(re.compile("queued|running"))
    # No reload: the list asks the API again every two seconds.
    expect(badge).to_have_text("succeeded", timeout=20_000)
    page.get_by_label("Kind").select_option("embed")
    expect(page.locator(f'[data-job-id="{job["id"]}"]')).to_have_count(0)
    page.get_by_label("Kind").select_option("generate")
    expect(badge).to_have_text("succeeded")


def test_reconnects_with_last_event_id_after_the_api_restarts(page: Page, web_stack):
    enter_key(page, web_stack.key)
    sent: list[dict] = []
    page.on("request", lambda r: sent.append(r.headers) if r.url.endswith("/events") else None)
    prompt = words(80, "r")
    submit_echo(page, prompt, delay_ms=150)
    observe(page, lambda s: len(s[-1][1].split()) >= 5, timeout=30)

    # Kill the API mid-stream and start it again on the same port.
    port = web_stack.api_port
    web_stack.kill(web_stack.api_proc, signal.SIGKILL)
    proc = web_stack.spawn("api-restarted", ["api", "--port", str(port)])
    web_stack.api_proc = proc

    def api_up() -> bool:
        try:
            return httpx.get(f"{web_stack.url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(api_up, 30, "restarted API", proc)
    samples = observe(page, lambda s: False, timeout=40, every=0.2)
    assert samples[-1][0] == "succeeded", samples[-3:]
    for st, text in samples:
        assert prompt.startswith(text), (st, text)  # nothing repeated after resuming
    assert output(page) == prompt
    resumed = [h.get("last-event-id") for h in sent[1:]]
    assert any(re.fullmatch(r"\d+-\d+", r or "") for r in resumed), sent


def test_polls_when_the_stream_is_unavailable(page: Page, web_stack):
    enter_key(page, web_stack.key)
    page.route("**/v1/jobs/*/events", lambda route: route.abort("connectionreset"))
    prompt = words(30, "p")
    submit_echo(page, prompt, delay_ms=150)
    expect(page.get_by_test_id("stream-mode")).to_contain_text("checking the job every second")
    expect(page.get_by_test_id("job-status")).to_have_text("succeeded", timeout=30_000)
    assert output(page) == prompt


def chat_line(custom_id: str, model: str, content: str) -> str:
    body = {"model": model, "messages": [{"role": "user", "content": content}]}
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
                       "body": body}) + "\n"


def start_batch(page: Page, path) -> None:
    page.goto("/batches/")
    page.get_by_label("JSONL file").set_input_files(str(path))
    page.get_by_role("button", name="Upload and start").click()


def test_batches_page(page: Page, web_stack, tmp_path):
    enter_key(page, web_stack.key)
    if web_stack.default_client.get("/v1/batches").status_code == 404:
        page.goto("/batches/")
        expect(page.get_by_test_id("batches-unavailable").first).to_contain_text(
            "Batches are not available on this server")
        return

    good = tmp_path / "good.jsonl"
    good.write_text("".join(chat_line(f"r{i}", "debug/echo", f"hello {i}") for i in range(3)))
    start_batch(page, good)
    page.wait_for_url("**/batch/?id=*")
    expect(page.get_by_test_id("batch-status")).to_have_text("completed", timeout=60_000)
    expect(page.locator("#batch-progress")).to_have_attribute("value", "3")
    with page.expect_download() as download:
        page.get_by_role("button", name="Download results").click()
    results = download.value.path().read_text().splitlines()
    assert sorted(json.loads(r)["custom_id"] for r in results) == ["r0", "r1", "r2"]
    # Its lines, each a job whose page links back to the batch.
    batch_id = page.url.split("id=")[1]
    expect(page.get_by_test_id("line-row")).to_have_count(3)
    expect(page.get_by_test_id("line-counts")).to_contain_text("3 succeeded")
    page.get_by_test_id("line-row").first.get_by_role("link").click()
    expect(page.get_by_test_id("batch-link")).to_contain_text(batch_id)
    page.get_by_test_id("batch-link").click()
    page.get_by_role("link", name="All its lines in the jobs list").click()
    page.wait_for_url("**/jobs/?batch=*")  # the batch page's section is labelled "Batch …" too
    expect(page.get_by_label("Batch", exact=True)).to_have_value(batch_id)
    expect(page.get_by_test_id("job-row")).to_have_count(3)

    # A line the server refuses: the batch fails, and the page says which line and why.
    bad = tmp_path / "bad.jsonl"
    bad.write_text(chat_line("ok", "debug/echo", "fine") + chat_line("no", "debug/nope", "x"))
    start_batch(page, bad)
    page.wait_for_url("**/batch/?id=*")
    expect(page.get_by_test_id("batch-status")).to_have_text("failed", timeout=60_000)
    expect(page.get_by_test_id("batch-errors")).to_contain_text("line 2")
    expect(page.get_by_test_id("batch-errors")).to_contain_text("debug/nope")

    # Not JSON: refused in the browser before anything is uploaded.
    broken = tmp_path / "broken.jsonl"
    broken.write_text(chat_line("ok", "debug/echo", "fine") + "{not json\n")
    start_batch(page, broken)
    expect(page.get_by_role("alert").filter(has_text="Not JSON objects: line 2")).to_be_visible()
    page.get_by_role("link", name="Batches").first.click()
    expect(page.get_by_role("table").locator("tbody tr")).to_have_count(2)


UNLABELLED_CONTROLS = """() => [...document.querySelectorAll('input, select, textarea, button')]
    .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label')
                  && !(el.tagName === 'BUTTON' && el.innerText.trim()))
    .map(el => el.outerHTML)"""


def test_phone_width_and_labelled_controls(page: Page, web_stack):
    page.set_viewport_size({"width": 360, "height": 780})
    enter_key(page, web_stack.key)
    c = web_stack.default_client
    endpoint = c.post("/v1/webhook_endpoints", json={
        "url": "http://127.0.0.1:9/a/rather/long/path/to/a/receiver/that/must/wrap",
        "events": ["job.succeeded", "job.failed", "response.completed"]}).json()
    job = web_stack.submit(kind="generate", input={"prompt": words(12)})
    web_stack.wait(job["id"])
    response = c.post("/v1/responses", json={"model": "debug/echo", "input": words(12)}).json()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for path in ["/", "/key/", "/jobs/", "/batches/", "/operators/", "/webhooks/",
                 f"/webhook/?id={endpoint['id']}", f"/response/?id={response['id']}",
                 f"/job/?id={job['id']}"]:
        page.goto(path)
        expect(page.locator("h1")).to_be_visible()
        expect(page.locator('[aria-busy="true"]')).to_have_count(0)
        assert page.evaluate(UNLABELLED_CONTROLS) == [], path
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"{path} scrolls sideways by {overflow}px at 360px wide"
        page.screenshot(path=str(ARTIFACTS / f"phone-{path.strip('/').split('/')[0] or 'new'}.png"),
                        full_page=True)
    expect(page.get_by_test_id("job-status")).to_have_text("succeeded")
    c.delete(f"/v1/webhook_endpoints/{endpoint['id']}")
