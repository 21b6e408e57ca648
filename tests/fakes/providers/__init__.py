"""Local servers that speak the hosted providers' wire protocols, for the SDKs under test."""

from tests.fakes.providers.protocols import PROTOCOLS, count_words, expected_text, token_text
from tests.fakes.providers.server import (
    Behaviour,
    FakeProviderServer,
    RecordedRequest,
    cut,
    error,
    ok,
    slow_start,
    stream_error,
)

__all__ = [
    "PROTOCOLS", "Behaviour", "FakeProviderServer", "RecordedRequest", "count_words", "cut",
    "error", "expected_text", "ok", "slow_start", "stream_error",
    "token_text",
]
