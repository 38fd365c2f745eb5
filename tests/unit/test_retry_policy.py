from __future__ import annotations

import pytest

from services.spool.policy import RetryPolicy


@pytest.mark.parametrize(
    ("attempts", "low", "high"),
    [(1, 2.5, 5.0), (2, 5.0, 10.0), (3, 10.0, 20.0), (8, 300.0, 600.0), (50, 300.0, 600.0)],
)
def test_delay_doubles_within_jitter_and_is_capped(attempts: int, low: float, high: float) -> None:
    policy = RetryPolicy(base_s=5, cap_s=600)
    assert policy.delay(attempts, 0.0) == pytest.approx(low)
    assert policy.delay(attempts, 0.999999) == pytest.approx(high, rel=1e-5)


def test_gives_up_only_after_the_window() -> None:
    policy = RetryPolicy(window_s=24 * 3600)
    assert not policy.gives_up(23.9 * 3600)
    assert policy.gives_up(24 * 3600)
