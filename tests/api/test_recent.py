"""RecentJobs: which jobs' events the API may follow without reading their rows."""

from __future__ import annotations

import time

from api.recent import RecentJobs


def test_a_recent_job_is_known_to_its_owner_alone_and_for_a_while():
    recent = RecentJobs(size=2, ttl_s=0.2)
    recent.add("job_a", "key_1")
    assert recent.owned("job_a", "key_1")
    assert not recent.owned("job_a", "key_2")  # another key's: the route reads the row
    assert not recent.owned("job_b", "key_1")
    recent.add("job_b", "key_1")
    recent.add("job_c", "key_1")  # the oldest goes
    assert not recent.owned("job_a", "key_1") and recent.owned("job_c", "key_1")
    time.sleep(0.3)
    assert not recent.owned("job_c", "key_1")  # too old: its stream may be gone
