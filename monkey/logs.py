"""Logs: one JSON object per line (with job id, attempt, worker and model where known),
or readable lines on a terminal. Prompts and secrets are never passed to the logger.

The format is MONKEY_LOG_FORMAT: `json`, `text`, or `auto` (the default: text when
stderr is a terminal, JSON otherwise). Text lines read `12:01:02 INFO  message k=v`,
the level coloured on a terminal unless NO_COLOR is set (MONKEY_LOG_COLOR=1 forces
colour: `monkey up` sets it for its children, whose stderr is a pipe to it).
MONKEY_SERVICE, when set, is added to every JSON line as `service`.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import TextIO

_STANDARD = set(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}
# Extras that only repeat the message (uvicorn's coloured copy of it).
_NOT_SHOWN_AS_TEXT = {"color_message"}

FORMATS = ("json", "text")
_LEVEL_COLOURS = {"DEBUG": "2", "INFO": "32", "WARNING": "33", "ERROR": "31", "CRITICAL": "1;31"}


def _extras(record: logging.LogRecord) -> dict[str, object]:
    return {k: v for k, v in vars(record).items()
            if k not in _STANDARD and not k.startswith("_")}


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str | None = None) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": round(record.created, 3),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if self.service:
            out["service"] = self.service
        out.update(_extras(record))
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class TextFormatter(logging.Formatter):
    """`12:01:02 INFO  message key=value`, local time; a traceback on the lines below."""

    def __init__(self, colour: bool = False) -> None:
        super().__init__()
        self.colour = colour

    def format(self, record: logging.LogRecord) -> str:
        level = f"{record.levelname:<5}"
        if self.colour:
            level = f"\x1b[{_LEVEL_COLOURS.get(record.levelname, '0')}m{level}\x1b[0m"
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        parts = [stamp, level, record.getMessage()]
        for key, value in _extras(record).items():
            if key in _NOT_SHOWN_AS_TEXT:
                continue
            shown = value if isinstance(value, str | int | float) else json.dumps(value,
                                                                                  default=str)
            parts.append(f"{key}={shown}")
        line = " ".join(str(p) for p in parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def log_format(stream: TextIO | None = None) -> str:
    """`json` or `text`: MONKEY_LOG_FORMAT, else text on a terminal, JSON otherwise."""
    chosen = os.environ.get("MONKEY_LOG_FORMAT", "auto").strip().lower()
    if chosen in FORMATS:
        return chosen
    return "text" if _isatty(stream or sys.stderr) else "json"


def use_colour(stream: TextIO | None = None) -> bool:
    """Colour on a terminal (or with MONKEY_LOG_COLOR=1), never with NO_COLOR set."""
    if os.environ.get("NO_COLOR"):
        return False
    forced = os.environ.get("MONKEY_LOG_COLOR", "").strip().lower()
    if forced in ("1", "true", "yes", "always"):
        return True
    if forced in ("0", "false", "no", "never"):
        return False
    return _isatty(stream or sys.stderr) and os.environ.get("TERM") != "dumb"


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # closed or not a file
        return False


def formatter(stream: TextIO | None = None) -> logging.Formatter:
    if log_format(stream) == "text":
        return TextFormatter(colour=use_colour(stream))
    return JsonFormatter(service=os.environ.get("MONKEY_SERVICE") or None)


def configure(level: str = "INFO", stream: TextIO | None = None) -> None:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter(stream))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
