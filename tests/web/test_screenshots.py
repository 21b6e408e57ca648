"""The README's screenshots: {job-streaming,new-job,batch,operators}-{light,dark}.png, each
taken of the live UI in both colour schemes, then checked (written by this run, the page's
width, many colours, light or dark as named). They go to a temporary folder, so a test run
leaves the checkout clean; `MONKEY_UPDATE_SCREENSHOTS=1` writes them to docs/screenshots."""

from __future__ import annotations

import base64
import os
import re
import struct
import time
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.conftest import REPO
from tests.web.test_ui_surfaces import start_batch
from tests.web.ui import enter_key, status

pytestmark = pytest.mark.slow

DOCS = REPO / "docs" / "screenshots"
NAMES = ("job-streaming", "new-job", "batch", "operators")
SCHEMES = ("light", "dark")
WIDTH = 1000
ANSWER = """## Merging two sorted lists

A single pass with two indexes keeps it linear:

```python
def merge(a: list[int], b: list[int]) -> list[int]:
    \"\"\"The items of two sorted lists, in order.\"\"\"
    out, i, j = [], 0, 0
    while i < len(a) and j < len(b):
        if a[i] <= b[j]:
            out.append(a[i])
            i += 1
        else:
            out.append(b[j])
            j += 1
    return out + a[i:] + b[j:]
```

It walks both lists once, so it takes **O(n + m)** time. """ + " ".join(
    "Equal items keep their order, so the merge is stable, which matters when the items "
    "carry more than the key they are sorted by.".split() * 4)

# Distinct colours (rounded to 16 levels a channel) and the mean luminance (0-255) of
# an image, read back in the browser (no imaging library in the test environment).
LOOK = """async (src) => {
    const img = new Image();
    img.src = src;
    await img.decode();
    const canvas = document.createElement('canvas');
    canvas.width = img.width; canvas.height = img.height;
    const ctx = canvas.getContext('2d');
    ctx.drawImage(img, 0, 0);
    const px = ctx.getImageData(0, 0, img.width, img.height).data;
    const colours = new Set();
    let sum = 0, n = 0;
    for (let i = 0; i < px.length; i += 4 * 7) {
        const [r, g, b] = [px[i], px[i + 1], px[i + 2]];
        colours.add((r >> 4) << 8 | (g >> 4) << 4 | (b >> 4));
        sum += 0.2126 * r + 0.7152 * g + 0.0722 * b; n++;
    }
    return [colours.size, sum / n];
}"""


def shoot(page: Page, shots: Path, name: str) -> None:
    shots.mkdir(parents=True, exist_ok=True)
    for scheme in SCHEMES:
        page.emulate_media(color_scheme=scheme)
        page.screenshot(path=str(shots / f"{name}-{scheme}.png"), full_page=True)
    page.emulate_media(color_scheme="light")


def png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", head[16:24])


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    return DOCS if os.environ.get("MONKEY_UPDATE_SCREENSHOTS") == "1" else tmp_path / "shots"


def test_screenshots_are_regenerated_light_and_dark(page: Page, web_stack, shots: Path):
    started = time.time()
    enter_key(page, web_stack.key)
    c = web_stack.default_client

    # A job mid-stream, its Python block already highlighted.
    job = web_stack.submit(input={"prompt": ANSWER}, params={"delay_ms": 80, "max_tokens": 1000})
    page.goto(f"/job/?id={job['id']}")
    out = page.get_by_test_id("job-output")
    expect(out.locator(".code-block code.language-python .hljs-keyword").first).to_have_text(
        "def", timeout=30_000)
    expect(out).to_contain_text("It walks both lists", timeout=30_000)
    page.evaluate("window.scrollTo(0, 0)")
    assert status(page) == "running"
    shoot(page, shots, "job-streaming")
    assert status(page) == "running", "the job ended before both shots were taken"
    c.post(f"/v1/jobs/{job['id']}/cancel")

    # The new-job form, filled in.
    page.goto("/")
    page.get_by_label("Model", exact=True).select_option("debug/echo")
    page.get_by_label("System message (optional)").fill("You write small, tested Python.")
    page.get_by_label("Prompt").fill("Write a function that merges two sorted lists.")
    shoot(page, shots, "new-job")

    # A batch in progress, and the queues during it.
    batch_id = start_batch(web_stack, lines=24, delay_ms=300, n_words=10)
    try:
        page.goto(f"/batch/?id={batch_id}")
        expect(page.get_by_test_id("batch-eta")).to_contain_text("left at the pace so far",
                                                                 timeout=30_000)
        shoot(page, shots, "batch")
        page.goto("/operators/")
        running = page.get_by_test_id("chart-llm-running").get_by_role("img")
        expect(running).to_have_attribute("aria-label", re.compile(r"now: running [1-9]"),
                                          timeout=30_000)
        page.wait_for_function("""() => (document.querySelector('[data-testid="history-note"]')
            ?.textContent.match(/(\\d+) samples/) ?? [0, 0])[1] >= 8""", timeout=30_000)
        shoot(page, shots, "operators")
    finally:
        c.post(f"/v1/batches/{batch_id}/cancel")

    for name in NAMES:
        looks = {}
        for scheme in SCHEMES:
            path = shots / f"{name}-{scheme}.png"
            assert path.exists() and path.stat().st_mtime >= started, f"{path} was not written"
            width, height = png_size(path)
            assert width == WIDTH and height >= 600, (path, width, height)
            assert path.stat().st_size > 20_000, f"{path} is nearly empty"
            src = "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()
            looks[scheme] = page.evaluate(LOOK, src)
            assert looks[scheme][0] >= 30, f"{path} has {looks[scheme][0]} colours"
        assert looks["light"][1] > 180 and looks["dark"][1] < 80, (name, looks)
