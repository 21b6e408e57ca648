"""The local runtime: torch models of this worker process, batched per model.

Importing this package imports no torch; `LocalRuntime.load()` does, once per process.
"""

from workers.runtimes.local.runtime import LocalRuntime, make_local_runtime

__all__ = ["LocalRuntime", "make_local_runtime"]
