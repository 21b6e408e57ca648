"""The `monkey` command (monkey/cli.py) and the Python client of the API:
`MonkeyClient`, `AsyncMonkeyClient`, and the `MonkeyAPIError` they raise.

The client is imported on first use (PEP 562), so `import monkey.embedded` does not
import httpx.
"""

from typing import TYPE_CHECKING

from common.lazy import lazy_exports as _lazy_exports

if TYPE_CHECKING:
    from monkey.client import AsyncMonkeyClient, MonkeyAPIError, MonkeyClient

__all__ = ["AsyncMonkeyClient", "MonkeyAPIError", "MonkeyClient"]

_SOURCES = dict.fromkeys(__all__, "monkey.client")


__getattr__ = _lazy_exports(__name__, _SOURCES)
