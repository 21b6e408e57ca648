"""How long a count of a key's queued jobs stands in for a fresh one (the queued cap's
COUNT is a transaction of its own: asked per submit, it would cost more than the job)."""

from __future__ import annotations

from api.services.jobs import count_still_good
from common.settings import Settings


def test_with_the_request_limit_a_count_far_below_the_cap_stays_good_a_while():
    limited = Settings(MONKEY_RATE_LIMIT_PER_S=100, MONKEY_RATE_LIMIT_BURST=500,
                       MONKEY_MAX_QUEUED_PER_KEY=10_000)
    # Every API process together adds at most burst + rate x age since the count.
    assert count_still_good(limited, known=0, age_s=20, adding=1)
    assert not count_still_good(limited, known=0, age_s=31, adding=1)  # too old anyway
    assert not count_still_good(limited, known=9_000, age_s=6, adding=1)  # 9,000+500+600
    assert count_still_good(limited, known=9_000, age_s=4, adding=1)


def test_without_it_a_count_is_good_for_a_second_below_half_the_cap():
    unlimited = Settings(MONKEY_RATE_LIMIT_PER_S=0, MONKEY_MAX_QUEUED_PER_KEY=10_000)
    assert count_still_good(unlimited, known=0, age_s=0.5, adding=1)
    assert not count_still_good(unlimited, known=0, age_s=1.5, adding=1)
    assert not count_still_good(unlimited, known=5_000, age_s=0.5, adding=1)
