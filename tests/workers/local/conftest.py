"""Fixtures of the local runtime's tests: a tiny causal LM built here, and one loaded runtime.

The LM (workers/runtimes/local/tiny.py) has random weights and no end-of-sequence token, so a
completion always runs to max_tokens; EOS handling is tested by pointing an executor's eos ids
at a token the model is known to produce.
"""

from __future__ import annotations

import pytest

from workers.runtimes.local.tiny import build_tiny_lm


@pytest.fixture(scope="session")
def tiny_lm_path(tmp_path_factory) -> str:
    return build_tiny_lm(tmp_path_factory.mktemp("tiny-lm"))


@pytest.fixture(scope="session")
def local_settings(tiny_lm_path):
    from common.settings import Settings

    return Settings(local_models=f"tiny={tiny_lm_path}", max_batch=32, max_wait_ms=20,
                    device="cpu")


@pytest.fixture(scope="session")
def runtime(local_settings):
    """The real LocalRuntime, loaded once: all-MiniLM-L6-v2 and the tiny LM."""
    from workers.runtimes.local import make_local_runtime

    rt = make_local_runtime(local_settings)
    rt.load()
    yield rt
    rt.close()


@pytest.fixture
def make_job():
    import itertools

    from workers.runtimes.base import JobSpec

    counter = itertools.count()

    def make(kind: str = "generate", model: str = "local/tiny", *, input=None, **params):
        if input is None:
            input = {"texts": ["hello"]} if kind == "embed" else {"prompt": "the monkey"}
        return JobSpec(id=f"job-{next(counter)}", kind=kind, model=model, input=input,
                       params=params, attempt=1)

    return make
