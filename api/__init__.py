"""The HTTP API (`create_app(settings)`, which uvicorn runs as a factory) and the
control process beside it (`run_control(settings)`: the reconciler and the batch work).

Both are imported on first use (PEP 562), so that the control process (api.control)
does not import the app and its routes. Importing `api` never imports torch or the
workers (tests/api/test_imports.py).
"""

from typing import TYPE_CHECKING

from common.lazy import lazy_exports as _lazy_exports

if TYPE_CHECKING:
    from api.control import run_control
    from api.main import create_app

__all__ = ["create_app", "run_control"]

_SOURCES = {"create_app": "api.main", "run_control": "api.control"}


__getattr__ = _lazy_exports(__name__, _SOURCES)
