"""The backend service installs without torch: importing the API must not pull it in."""

import subprocess
import sys

from tests.conftest import REPO

HEAVY = ("torch", "transformers", "sentence_transformers", "workers")


def test_api_imports_no_torch_and_no_workers():
    code = (
        "import sys, api, api.main\n"
        "api.main.create_app()\n"
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "", f"api imported: {out.stdout.strip()}"


def test_the_check_itself_notices_a_heavy_import():
    # Guard against a check that cannot fail: the same probe sees workers when imported.
    code = "import sys, workers.lifecycle\nprint('workers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "True"
