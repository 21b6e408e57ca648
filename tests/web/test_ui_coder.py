"""What a coder uses in the browser: markdown output (safe, highlighted, copyable), a
view that follows the stream, the form's models and parameters, re-running a job,
filters in the address, dark mode, page titles and the 404 page."""

from __future__ import annotations

import json
import re
from datetime import datetime

import pytest
from playwright.sync_api import Page, expect

from tests.web.conftest import ARTIFACTS, WEB
from tests.web.ui import enter_key, observe, status, submit_echo, words

pytestmark = pytest.mark.slow

CODE = "def add(a, b):\n    return a + b  # " + "a long comment " * 12 + "\n"
HOSTILE = ("# Result\n\nSome **bold** text <img src=x onerror=\"window.__pwned = 1\"> and "
           "[a link](javascript:window.__pwned=2) end.\n\n```python\n" + CODE + "```\n\n")


def test_markdown_output_is_rendered_safely_with_copyable_code(page: Page, web_stack):
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    enter_key(page, web_stack.key)
    tail = words(40, "t")
    job = web_stack.submit(kind="generate", input={"prompt": HOSTILE + tail},
                           params={"delay_ms": 60, "max_tokens": 400})
    page.goto(f"/job/?id={job['id']}")
    out = page.get_by_test_id("job-output")

    # Mid-stream: the code block is already highlighted while the tail still streams.
    keyword = out.locator(".code-block code.language-python .hljs-keyword").first
    expect(keyword).to_have_text("def", timeout=30_000)
    assert status(page) == "running"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "job-markdown-streaming.png"), full_page=True)
    expect(page.get_by_test_id("job-status")).to_have_text("succeeded", timeout=30_000)

    expect(out.locator("h3")).to_have_text("Result")  # under the page's h1 and h2
    expect(out.locator("strong")).to_have_text("bold")
    # The model's HTML is shown as text and creates no element; its script link is no link.
    expect(out).to_contain_text('<img src=x onerror="window.__pwned = 1">')
    assert out.locator("img, script, [onerror]").count() == 0
    assert out.locator("a").count() == 0
    expect(out).to_contain_text("[a link](javascript:window.__pwned=2)")
    assert page.evaluate("window.__pwned") is None

    out.get_by_role("button", name="Copy this Python code").click()
    expect(page.get_by_test_id("copy-status")).to_have_text("Code copied to the clipboard.")
    assert page.evaluate("navigator.clipboard.readText()") == CODE
    page.get_by_role("button", name="Copy output").click()
    assert page.evaluate("navigator.clipboard.readText()") == HOSTILE + tail
    page.get_by_role("button", name="Copy job id").click()
    assert page.evaluate("navigator.clipboard.readText()") == job["id"]
    with page.expect_download() as download:
        page.get_by_role("button", name="Download .md").click()
    assert download.value.suggested_filename == f"{job['id']}.md"
    assert download.value.path().read_text() == HOSTILE + tail

    # The raw view shows the text as it came.
    page.get_by_label("Raw text").check()
    expect(page.get_by_test_id("job-output")).to_have_text(HOSTILE.strip() + "\n\n" + tail)

    # On a phone, long code lines scroll sideways inside their block, not the page.
    page.get_by_label("Raw text").uncheck()
    page.set_viewport_size({"width": 360, "height": 780})
    pre = page.locator(".code-block pre")
    assert pre.evaluate("el => el.scrollWidth > el.clientWidth + 50"), "code wraps, not scrolls"
    assert pre.evaluate("el => getComputedStyle(el).whiteSpace") == "pre"
    assert page.evaluate("document.documentElement.scrollWidth - window.innerWidth") <= 0
    assert not page.page_errors, page.page_errors


def _end_below_view(page: Page) -> float:
    return page.evaluate("""() => document.querySelector('[data-testid="job-output"]')
        .getBoundingClientRect().bottom - window.innerHeight""")


def test_the_view_follows_the_stream_until_the_reader_scrolls_away(page: Page, web_stack):
    page.set_viewport_size({"width": 1000, "height": 600})
    enter_key(page, web_stack.key)
    lines = "".join(f"line {i}\n\n" for i in range(300))
    job = web_stack.submit(kind="generate", input={"prompt": lines},
                           params={"delay_ms": 40, "max_tokens": 1000})
    page.goto(f"/job/?id={job['id']}")
    # Well past one screen of output, its end is still in view.
    observe(page, lambda s: s[-1][1].count("line") >= 60, timeout=40)
    assert page.evaluate("window.scrollY") > 500
    assert _end_below_view(page) <= 60

    # The reader scrolls up: the view stays where they put it, and offers to follow again.
    page.mouse.wheel(0, -400)
    page.wait_for_timeout(300)
    y = page.evaluate("window.scrollY")
    observe(page, lambda s: s[-1][1].count("line") >= 100, timeout=40)
    assert abs(page.evaluate("window.scrollY") - y) < 5
    assert _end_below_view(page) > 200
    page.get_by_test_id("follow-output").click()
    page.wait_for_timeout(500)
    assert _end_below_view(page) <= 60
    assert status(page) == "running"
    page.get_by_role("button", name="Cancel job").click()
    page.get_by_role("button", name="Yes, cancel it").click()
    expect(page.get_by_test_id("job-status")).to_have_text("cancelled")


def test_form_describes_models_warns_without_a_worker_and_submits_with_ctrl_enter(
        page: Page, web_stack):
    enter_key(page, web_stack.key)
    page.goto("/")
    expect(page).to_have_title("New job · Monkey Coder")
    model = page.get_by_label("Model", exact=True)
    # This stack has no gpu worker: choosing a local model warns before anything is sent.
    model.select_option("local/all-MiniLM-L6-v2")
    expect(page.get_by_test_id("no-worker-warning")).to_contain_text("monkey worker --queues gpu")
    expect(page.get_by_test_id("model-description")).to_contain_text("Embedding model")
    expect(page.get_by_test_id("model-loaded-on")).to_contain_text("no worker yet")
    model.select_option("debug/echo")
    expect(page.get_by_test_id("no-worker-warning")).to_have_count(0)
    expect(page.get_by_test_id("model-params")).to_have_text("max_tokens, stop, delay_ms")
    expect(page.get_by_label("Seed")).to_have_count(0)  # echo reads no seed

    page.get_by_label("System message (optional)").fill("SYSTEM rules")
    page.get_by_role("button", name="Add an earlier turn").click()
    page.get_by_label("Message", exact=True).fill("EARLIER question")
    page.get_by_label("Prompt").fill("final words here")
    page.get_by_label("Stop sequences (one per line)").fill("here")
    page.get_by_label("Prompt").press("Control+Enter")
    page.wait_for_url("**/job/?id=*")
    job_id = page.get_by_test_id("job-id").inner_text()
    expect(page.get_by_test_id("job-status")).to_have_text("succeeded")
    expect(page.get_by_test_id("job-output")).to_have_text(
        "SYSTEM rules EARLIER question final words")
    expect(page).to_have_title(f"Job {job_id} (succeeded) · Monkey Coder")
    job = web_stack.default_client.get(f"/v1/jobs/{job_id}").json()
    assert job["input"] == {"messages": [
        {"role": "system", "content": "SYSTEM rules"},
        {"role": "user", "content": "EARLIER question"},
        {"role": "user", "content": "final words here"}]}
    # Only what echo reads is sent (the API fills in delay_ms itself).
    assert {k: v for k, v in job["params"].items() if k != "delay_ms"} == {
        "max_tokens": 256, "stop": ["here"]}
    # The request panel shows the messages as text.
    page.get_by_text("Request", exact=True).click()
    expect(page.get_by_test_id("request")).to_contain_text("EARLIER question")

    # Status history: the job's own times, not when the page saw them.
    done = page.locator('ol.history li[data-status="succeeded"] time')
    assert _ms(done.get_attribute("datetime")) == _ms(job["finished_at"])
    queued = page.locator('ol.history li[data-status="queued"] time')
    assert _ms(queued.get_attribute("datetime")) == _ms(job["created_at"])

    # Back finds the form as it was.
    page.go_back()
    expect(page.get_by_label("Prompt")).to_have_value("final words here")
    expect(page.get_by_label("System message (optional)")).to_have_value("SYSTEM rules")


def _ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)


def test_focus_after_submit_rerun_and_edit(page: Page, web_stack):
    enter_key(page, web_stack.key)
    first = submit_echo(page, words(30, "f"), delay_ms=100)
    # Focus lands on the heading, so Tab then Enter does not reach Cancel.
    assert page.evaluate("document.activeElement.id") == "job-title"
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.innerText") == "Copy job id"
    expect(page.get_by_test_id("job-status")).to_have_text("succeeded", timeout=20_000)

    page.get_by_role("button", name="Run again").click()
    expect(page.get_by_test_id("job-id")).not_to_have_text(first)
    again = page.get_by_test_id("job-id").inner_text()
    a, b = (web_stack.default_client.get(f"/v1/jobs/{i}").json() for i in (first, again))
    assert (a["model"], a["input"], a["params"]) == (b["model"], b["input"], b["params"])

    page.get_by_role("link", name="Edit and resubmit").click()
    expect(page.get_by_test_id("from-job")).to_contain_text(again)
    expect(page.get_by_label("Prompt")).to_have_value(words(30, "f"))
    expect(page.get_by_label("Delay per token (ms)")).to_have_value("100")
    page.get_by_label("Prompt").fill("edited prompt")
    page.get_by_role("button", name="Submit job").click()
    expect(page.get_by_test_id("job-output")).to_have_text("edited prompt", timeout=20_000)


def test_jobs_filters_live_in_the_address(page: Page, web_stack):
    enter_key(page, web_stack.key)
    inter = web_stack.submit(kind="generate", input={"prompt": "inter"})
    low = web_stack.submit(kind="generate", input={"prompt": "low"}, priority="batch")
    for j in (inter, low):
        web_stack.wait(j["id"])
    page.goto("/jobs/")
    page.get_by_label("Priority").select_option("batch")
    expect(page).to_have_url(re.compile(r"/jobs/\?priority=batch$"))
    expect(page.locator(f'[data-job-id="{low["id"]}"]')).to_have_count(1)
    expect(page.locator(f'[data-job-id="{inter["id"]}"]')).to_have_count(0)
    page.get_by_label("Model").fill("local/all-MiniLM-L6-v2")
    page.get_by_label("Model").press("Enter")
    expect(page).to_have_url(re.compile(r"model=local%2Fall-MiniLM-L6-v2"))
    expect(page.get_by_test_id("no-jobs")).to_contain_text("match these filters")
    # A reload (or a shared link) keeps them; Back undoes nothing it should not.
    page.goto("/jobs/?priority=interactive&model=debug%2Fecho")
    expect(page.get_by_label("Priority")).to_have_value("interactive")
    expect(page.get_by_label("Model")).to_have_value("debug/echo")
    expect(page.locator(f'[data-job-id="{inter["id"]}"]')).to_have_count(1)
    expect(page.locator(f'[data-job-id="{low["id"]}"]')).to_have_count(0)


BG = "getComputedStyle(document.body).backgroundColor"


def test_dark_mode_follows_the_system_and_the_toggle(browser, web_stack):
    context = browser.new_context(base_url=web_stack.url, color_scheme="dark")
    try:
        page = context.new_page()
        page.goto("/key/")
        assert page.evaluate(BG) == "rgb(13, 17, 23)"
        toggle = page.get_by_test_id("theme-toggle")
        expect(toggle).to_have_text("Theme: system")
        toggle.click()
        expect(toggle).to_have_text("Theme: light")
        assert page.evaluate(BG) == "rgb(255, 255, 255)"
        page.reload()  # the choice is kept
        expect(page.get_by_test_id("theme-toggle")).to_have_text("Theme: light")
        assert page.evaluate(BG) == "rgb(255, 255, 255)"
        page.get_by_test_id("theme-toggle").click()
        assert page.evaluate(BG) == "rgb(13, 17, 23)"
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "key-dark.png"))
    finally:
        context.close()


def test_not_found_page_and_outage_message(page: Page, web_stack):
    resp = page.goto("/no/such/page/")
    assert resp is not None and resp.status == 404
    expect(page.locator("h1")).to_have_text("Page not found")
    page.get_by_role("link", name="Submit a new job").click()
    expect(page).to_have_url(re.compile(r"/$"))

    enter_key(page, web_stack.key)
    page.route("**/v1/models", lambda route: route.abort("connectionrefused"))
    page.goto("/")
    error = page.get_by_test_id("error")
    expect(error).to_contain_text("did not answer")
    expect(error).to_contain_text("Check your connection")
    expect(error).not_to_contain_text("rebuild")


AXE = WEB / "node_modules" / "axe-core" / "axe.min.js"
AXE_RUN = """async () => {
    const r = await axe.run(document, {resultTypes: ['violations']});
    return r.violations.map(
        v => `${v.impact} ${v.id}: ${v.nodes.map(n => n.target.join(' ')).join(', ')}`);
}"""
SIZES = {"desktop": {"width": 1000, "height": 900}, "phone": {"width": 360, "height": 780}}


def test_every_page_has_no_axe_violations_light_and_dark(browser, web_stack):
    if not AXE.exists():
        pytest.fail(f"{AXE} is missing: axe-core is a devDependency of web/ (npm ci)")
    c = web_stack.default_client
    # An endpoint whose receiver is not there: its delivery log holds a pending retry.
    endpoint = c.post("/v1/webhook_endpoints", json={"url": "http://127.0.0.1:9/hook",
                                                      "events": ["job.succeeded"]}).json()
    job = web_stack.submit(kind="generate", input={"prompt": HOSTILE})
    web_stack.wait(job["id"])
    response = c.post("/v1/responses", json={"model": "debug/echo", "input": HOSTILE}).json()
    pages = ["/", "/key/", "/jobs/?q=Result", "/batches/", f"/job/?id={job['id']}",
             "/operators/", "/no/such/page/", f"/response/?id={response['id']}", "/webhooks/",
             f"/webhook/?id={endpoint['id']}"]
    found = {}
    for scheme in ("light", "dark"):
        for size, viewport in SIZES.items():
            context = browser.new_context(base_url=web_stack.url, viewport=viewport,
                                          color_scheme=scheme)
            try:
                page = context.new_page()
                page.goto("/key/")
                page.evaluate(f"localStorage.setItem('monkey.apiKey', '{web_stack.key}')")
                for path in pages:
                    page.goto(path)
                    expect(page.locator("main h1").first).to_be_visible()
                    expect(page.locator('[aria-busy="true"]')).to_have_count(0)
                    page.add_script_tag(path=str(AXE))
                    violations = page.evaluate(AXE_RUN)
                    if violations:
                        found[f"{scheme} {size} {path}"] = violations
                    name = {"/": "new-job", "/operators/": "operators"}.get(
                        path, "job" if path.startswith("/job/") else None)
                    if name and size == "desktop":
                        ARTIFACTS.mkdir(parents=True, exist_ok=True)
                        page.screenshot(path=str(ARTIFACTS / f"{name}-{scheme}-{size}.png"),
                                        full_page=True)
            finally:
                context.close()
    assert not found, found


EMBED = {"model": "local/all-MiniLM-L6-v2", "kind": "embed"}


def test_a_queued_job_shows_its_place_and_it_moves(page: Page, web_stack):
    # No gpu worker in this stack: local jobs wait, and the first one leaves by cancel.
    enter_key(page, web_stack.key)
    first = web_stack.submit(**EMBED, input={"texts": ["one"]})
    second = web_stack.submit(**EMBED, input={"texts": ["two"]})
    try:
        page.goto(f"/job/?id={second['id']}")
        expect(page.get_by_test_id("queue-position")).to_have_text("1 job ahead of it")
        web_stack.default_client.post(f"/v1/jobs/{first['id']}/cancel")
        expect(page.get_by_test_id("queue-position")).to_have_text("Next in line")
        expect(page.get_by_test_id("queue-eta")).to_contain_text("about")
        page.get_by_role("link", name="All queues").click()
        expect(page.locator('[data-queue="gpu"] td[data-label="Waiting (interactive)"]')
               ).to_have_text("1")
    finally:
        for job in (first, second):
            web_stack.default_client.post(f"/v1/jobs/{job['id']}/cancel")


def test_a_cancelled_batch_counts_the_lines_it_never_ran(page: Page, web_stack, tmp_path):
    if web_stack.default_client.get("/v1/batches").status_code == 404:
        pytest.skip("this server has no batches")
    enter_key(page, web_stack.key)
    lines = tmp_path / "slow.jsonl"
    body = {"model": "debug/echo", "delay_ms": 300,
            "messages": [{"role": "user", "content": words(10)}]}
    lines.write_text("".join(json.dumps({"custom_id": f"s{i}", "method": "POST",
                                         "url": "/v1/chat/completions", "body": body}) + "\n"
                             for i in range(24)))
    page.goto("/batches/")
    page.get_by_label("JSONL file").set_input_files(str(lines))
    page.get_by_role("button", name="Upload and start").click()
    page.wait_for_url("**/batch/?id=*")
    batch_id = page.url.split("id=")[1]
    # Once some lines are done, the page estimates the rest from the pace so far.
    expect(page.get_by_test_id("batch-eta")).to_contain_text("left at the pace so far",
                                                             timeout=30_000)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "batch-in-progress.png"), full_page=True)
    page.get_by_role("button", name="Cancel batch").click()
    expect(page.get_by_test_id("batch-status")).to_have_text("cancelled", timeout=30_000)
    counts = web_stack.default_client.get(f"/v1/batches/{batch_id}").json()["request_counts"]
    not_run = counts["total"] - counts["completed"] - counts["failed"]
    assert 0 < not_run < 24, counts
    expect(page.get_by_test_id("batch-not-run")).to_have_text(
        f"{not_run} line{'s' if not_run > 1 else ''} cancelled before running.")
