"""When a failed batch is tried again, and when transient failures have lasted too long."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RetryPolicy:
    """Capped exponential back-off with jitter, inside a retry window.

    A transient failure never parks a batch while its failures are younger than ``window_s``
    (default 24 h): a warehouse that is down for a night resumes by itself.
    """

    base_s: float = 5.0
    cap_s: float = 600.0
    window_s: float = 24 * 3600.0

    def delay(self, attempts: int, jitter: float) -> float:
        """Seconds to wait after the ``attempts``-th failure; ``jitter`` in [0, 1) spreads
        retries over [half, full] of the capped exponential step."""
        step = min(self.cap_s, self.base_s * 2.0 ** max(0, attempts - 1))
        return step * (0.5 + 0.5 * jitter)

    def gives_up(self, failing_for_s: float) -> bool:
        return failing_for_s >= self.window_s
