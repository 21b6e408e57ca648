"""JSON text of job data: results, events, batch output lines, JSON columns.

Why: an embedding is hundreds of floats, and the json module turns a float into text and
back at about a microsecond each. A MiniLM batch line's vector (384 floats) went through
it five times (the worker's bulk finish, the row it read back, its `done` event, the
batch's finalize reading the row and writing the output line), about 1.5 ms of CPU a
line, taken from the forward pass on the same cores. orjson does the same in a fifteenth
of that.

The text is compact (no spaces) and UTF-8 (no \\u escapes for non-ASCII characters);
non-string keys become strings, as with the json module. NaN and infinities, which JSON
has no words for, become null (the json module writes NaN, which Postgres and strict
parsers refuse). A value orjson cannot write (an integer beyond 64 bits) falls back to
the json module.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

_OPTIONS = orjson.OPT_NON_STR_KEYS


def dumps_bytes(obj: Any) -> bytes:
    """The JSON of `obj`, as UTF-8 bytes."""
    try:
        return orjson.dumps(obj, option=_OPTIONS)
    except TypeError:
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def dumps(obj: Any) -> str:
    """The JSON of `obj`, as text (what a JSON column and a Redis field hold)."""
    return dumps_bytes(obj).decode()


def loads(text: str | bytes | bytearray | memoryview) -> Any:
    return orjson.loads(text)


__all__ = ["dumps", "dumps_bytes", "loads"]
