"""Identifiers that sort by creation time (fixed-width hex), so a cursor is just an id."""

import secrets
import time


def new_id(prefix: str) -> str:
    return f"{prefix}_{int(time.time() * 1000):012x}{secrets.token_hex(8)}"
