"""The `monkey` command (monkey/cli.py) and the Python client of the API:
`MonkeyClient`, `AsyncMonkeyClient`, and the `MonkeyAPIError` they raise.

The client is imported on first use (PEP 562), so `import monkey.embedded` does not
import httpx.
"""

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from monkey.client import AsyncMonkeyClient, MonkeyAPIError, MonkeyClient

__all__ = ["AsyncMonkeyClient", "MonkeyAPIError", "MonkeyClient"]

_SOURCES = dict.fromkeys(__all__, "monkey.client")


def __getattr__(name: str) -> object:
    if name not in _SOURCES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_SOURCES[name]), name)
    globals()[name] = value
    return value
