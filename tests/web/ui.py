"""Steps a user takes in the UI, shared by the browser tests."""

from __future__ import annotations

import time

from playwright.sync_api import Page, expect

TERMINAL = {"succeeded", "failed", "cancelled", "expired"}


def enter_key(page: Page, key: str) -> None:
    page.goto("/key/")
    page.get_by_role("textbox", name="API key").fill(key)
    page.get_by_role("button", name="Save key").click()
    expect(page.get_by_test_id("key-saved")).to_be_visible()


def submit_echo(page: Page, prompt: str, delay_ms: int) -> str:
    """Submits a debug/echo job from the form; returns its id once its page is open."""
    page.goto("/")
    page.get_by_label("Model", exact=True).select_option("debug/echo")
    page.get_by_label("Prompt").fill(prompt)
    page.get_by_label("Delay per token (ms)").fill(str(delay_ms))
    page.get_by_role("button", name="Submit job").click()
    page.wait_for_url("**/job/?id=*")
    job_id = page.get_by_test_id("job-id").inner_text()
    assert job_id.startswith("job_"), job_id
    return job_id


def status(page: Page) -> str:
    return page.get_by_test_id("job-status").inner_text().strip()


def output(page: Page) -> str:
    return page.get_by_test_id("job-output").inner_text()


# One round trip, so that status and text are seen at the same instant.
SAMPLE = """() => [
    document.querySelector('[data-testid="job-status"]')?.innerText.trim() ?? '',
    document.querySelector('[data-testid="job-output"]')?.innerText ?? '']"""


def observe(page: Page, until, timeout: float = 30, every: float = 0.1) -> list[tuple[str, str]]:
    """(status, visible text) samples until `until(samples)` is true or the job ends."""
    samples: list[tuple[str, str]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        samples.append(tuple(page.evaluate(SAMPLE)))
        if until(samples) or samples[-1][0] in TERMINAL:
            return samples
        page.wait_for_timeout(every * 1000)
    raise AssertionError(f"gave up after {timeout}s; last samples {samples[-5:]}")


def words(n: int, stem: str = "w") -> str:
    return " ".join(f"{stem}{i}" for i in range(n))
