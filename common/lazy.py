"""Lazy package exports (PEP 562): a package lists where each public name lives, and the
module is imported on first use, so importing a package stays cheap (no SQLAlchemy,
Celery or torch behind `import common`)."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping


def lazy_exports(package: str, sources: Mapping[str, str]) -> Callable[[str], object]:
    """The `__getattr__` of `package`: `name` comes from the module `sources[name]`."""

    def __getattr__(name: str) -> object:
        if name not in sources:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(sources[name]), name)
        setattr(sys.modules[package], name, value)  # later lookups skip this function
        return value

    return __getattr__


__all__ = ["lazy_exports"]
