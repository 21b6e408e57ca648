"""Browser tests: the built web UI in headless Chromium (Debian's package, driven by
Playwright's Python package), served by the real API with a real llm worker.

The UI is built once per session, at the end of collection (so before any stack's
API starts and decides whether to serve `web/out`), when `web/out` is missing or
older than its sources. Without Node.js/npm or Chromium the tests skip; with CI set
they fail instead.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.migrate import upgrade
from tests.conftest import CI, REPO, Stack, fresh_redis_url, make_database

WEB = REPO / "web"
WEB_OUT = WEB / "out"
ARTIFACTS = REPO / "artifacts" / "web"
CHROMIUM = Path(os.environ.get("MONKEY_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-gpu",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# What the export is built from; a newer file than out/index.html means rebuild.
SOURCES = ["app", "components", "lib", "package.json", "package-lock.json",
           "next.config.mjs", "tsconfig.json"]
BUILD_TIMEOUT_S = 900


def skip_or_fail(reason: str) -> None:
    if CI:
        pytest.fail(f"{reason} (CI is set, so this fails instead of skipping)")
    pytest.skip(reason)


def _newest_source_mtime() -> float:
    newest = 0.0
    for name in SOURCES:
        path = WEB / name
        files = path.rglob("*") if path.is_dir() else [path]
        for f in files:
            if f.is_file():
                newest = max(newest, f.stat().st_mtime)
    return newest


def web_build_is_current() -> bool:
    index = WEB_OUT / "index.html"
    return index.exists() and index.stat().st_mtime >= _newest_source_mtime()


def run_in_web(cmd: list[str]) -> subprocess.CompletedProcess:
    # Same origin: the test API serves the UI, so the build must not name another URL.
    env = {**os.environ, "NEXT_TELEMETRY_DISABLED": "1", "NEXT_PUBLIC_API_URL": ""}
    return subprocess.run(cmd, cwd=WEB, env=env, capture_output=True, text=True,
                          timeout=BUILD_TIMEOUT_S, check=False)


def _node_modules_current() -> bool:
    # npm writes node_modules/.package-lock.json on each install: older than the lock
    # means the lock changed since (a dependency was added), so install again.
    installed = WEB / "node_modules" / ".package-lock.json"
    return installed.exists() and (
        installed.stat().st_mtime >= (WEB / "package-lock.json").stat().st_mtime)


def install_web() -> str | None:
    """`npm ci` in web/ unless node_modules matches the lock. Returns why it could not,
    or None."""
    npm = shutil.which("npm")
    if npm is None:
        return "npm is not installed (Node.js >= 20.9 is needed to build web/)"
    if not _node_modules_current():
        done = run_in_web([npm, "ci", "--no-audit", "--no-fund"])
        if done.returncode != 0:
            return f"npm ci failed in web/:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    return None


def build_web() -> str | None:
    """Build `web/out` if missing or stale. Returns None when it is ready, or why it is
    not (no npm, install failed); a failing `next build` raises, since that is a bug."""
    if web_build_is_current():
        return None
    problem = install_web()
    if problem:
        return f"web/out is missing or stale and cannot be built: {problem}"
    done = run_in_web([shutil.which("npm") or "npm", "run", "build"])
    if done.returncode != 0:
        raise RuntimeError(f"npm run build failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}")
    os.utime(WEB_OUT / "index.html")  # mark it newer than the sources it was built from
    return None


_build = {"done": False, "problem": None}


def pytest_collection_finish(session: pytest.Session) -> None:
    if _build["done"] or not any(Path(str(item.path)).is_relative_to(Path(__file__).parent)
                                 for item in session.items):
        return
    _build["done"] = True
    _build["problem"] = build_web()


@pytest.fixture(scope="session")
def web_out() -> Path:
    if not _build["done"]:  # collected some other way: build now
        _build["done"] = True
        _build["problem"] = build_web()
    if _build["problem"]:
        skip_or_fail(_build["problem"])
    if not (WEB_OUT / "index.html").exists():
        skip_or_fail("web/out has not been built (cd web && npm ci && npm run build)")
    return WEB_OUT


@pytest.fixture(scope="session")
def chromium() -> Path:
    if not CHROMIUM.exists():
        skip_or_fail(f"Chromium is not installed at {CHROMIUM} (apt-get install -y chromium)")
    return CHROMIUM


@pytest.fixture(scope="module")
def web_stack(web_out, chromium, tmp_path_factory, redis_base) -> Iterator[Stack]:
    """The API serving `web/out`, one llm worker, SQLite, and an API key (`stack.key`)."""
    tmp = tmp_path_factory.mktemp("web-stack")
    # Webhook receivers of the tests listen on this machine; the queues are sampled
    # every second for the operators' charts.
    stack = Stack(make_database("sqlite", tmp), fresh_redis_url(redis_base), tmp,
                  env={"MONKEY_WEB_DIR": str(web_out), "MONKEY_WEBHOOK_ALLOW_PRIVATE": "1",
                       "MONKEY_OPS_SAMPLE_S": "1"})
    upgrade(stack.settings)
    stack.key = stack.new_key("web-tests")
    try:
        stack.start_api()
        stack.start_worker("llm", concurrency=8)
        page = stack.default_client.get("/")
        assert page.status_code == 200 and "<html" in page.text, (
            f"the API does not serve the UI at / (MONKEY_WEB_DIR={web_out}): {page.status_code}")
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="module")
def browser(web_stack, chromium):
    """One Chromium per module. Created after the stack: Playwright's sync API keeps an
    event loop marked running on this thread, so asyncio.run (keys) must come first."""
    from playwright.sync_api import expect, sync_playwright

    # Generous waits: this runs beside other work on a small shared machine.
    expect.set_options(timeout=15_000)
    pw = sync_playwright().start()
    try:
        browser = pw.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
        yield browser
        browser.close()
    finally:
        pw.stop()


@pytest.fixture
def page(browser, web_stack, request):
    """A fresh browser context (empty localStorage) on the stack; a screenshot of the
    last state is saved as artifacts/web/<test name>.png, pass or fail."""
    context = browser.new_context(base_url=web_stack.url, viewport={"width": 1000, "height": 900})
    context.set_default_timeout(15_000)
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    pg.page_errors = errors
    yield pg
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)
    try:
        pg.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
    finally:
        context.close()
