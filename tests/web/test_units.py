"""The UI's own unit tests (`npm test` in web/: the SSE reader and the job page's
reducer, on Node's built-in test runner), run as part of the Python suite."""

from __future__ import annotations

import shutil

from tests.web.conftest import install_web, run_in_web, skip_or_fail


def test_web_unit_tests():
    problem = install_web()
    if problem:
        skip_or_fail(problem)
    done = run_in_web([shutil.which("npm") or "npm", "test"])
    assert done.returncode == 0, f"{done.stdout[-6000:]}\n{done.stderr[-3000:]}"
    assert "# fail 0" in done.stdout, done.stdout[-3000:]
