"""The API key never shows: not in errors (causes included), events or logs."""

from __future__ import annotations

import logging
import traceback

import pytest

from common.errors import JobError, ProviderAuth, ProviderUnavailable
from tests.fakes.providers import error, ok
from tests.workers.providers.conftest import FAKE_KEY, WatchedContext, make_job

pytestmark = pytest.mark.timeout(30)

# The fakes echo the whole key back, which is worse than any real provider does.
ECHO = "Incorrect API key provided: {key}. You can find your API key at example.com."


def _everything(err: BaseException, ctx: WatchedContext, caplog) -> str:
    return "\n".join([
        str(err), repr(err), "".join(traceback.format_exception(err)),
        repr(err.as_dict()) if isinstance(err, JobError) else "",
        repr(ctx.tokens), repr(ctx.restarts), repr(ctx.progress_events), repr(ctx.retries),
        caplog.text,
    ])


@pytest.mark.parametrize(("script", "raised"), [
    ([error(401, message=ECHO)], ProviderAuth),
    ([error(500, message=ECHO), error(503, message=ECHO), error(500, message=ECHO)],
     ProviderUnavailable),
], ids=["auth", "unavailable"])
def test_the_key_appears_nowhere(provider, fake, make_runtime, caplog, script, raised):
    caplog.set_level(logging.DEBUG)
    fake.script(*script)
    ctx = WatchedContext()
    with pytest.raises(raised) as caught:
        make_runtime(provider_max_retries=2).generate(make_job(provider), ctx)

    assert fake.requests[0].key == FAKE_KEY  # it was sent, and echoed back
    assert FAKE_KEY not in _everything(caught.value, ctx, caplog)
    assert "[redacted]" in str(caught.value) or raised is ProviderAuth


def test_the_key_is_not_logged_on_success(provider, fake, make_runtime, caplog):
    caplog.set_level(logging.DEBUG)
    fake.script(error(429, message=ECHO), ok(tokens=2))
    ctx = WatchedContext()
    make_runtime().generate(make_job(provider), ctx)
    assert ctx.retries == ["rate_limited"]
    assert FAKE_KEY not in caplog.text
