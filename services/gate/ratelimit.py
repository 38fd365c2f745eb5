"""Per-client token buckets (one per gate process; the rate is split across processes)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable


class RateLimiter:
    def __init__(
        self, burst_s: float, processes: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._burst_s = burst_s
        self._processes = processes
        self._clock = clock
        self._buckets: dict[int, tuple[float, float]] = {}  # client -> (tokens, last refill)

    def retry_after(self, client_id: int, rps: float, cost: float = 1.0) -> int:
        """0 when ``cost`` units may go ahead (and are counted), else seconds to wait. A cost
        larger than the bucket (a 20 MB body under a 1 MB/s limit) may go when the bucket is
        full, leaving it in debt: it is then refused until the debt is paid back."""
        if rps <= 0:
            return 0
        rate = rps / self._processes
        capacity = max(1.0, rate * self._burst_s)
        now = self._clock()
        tokens, last = self._buckets.get(client_id, (capacity, now))
        tokens = min(capacity, tokens + (now - last) * rate)
        if tokens >= min(cost, capacity):
            self._buckets[client_id] = (tokens - cost, now)
            return 0
        self._buckets[client_id] = (tokens, now)
        return max(1, math.ceil((min(cost, capacity) - tokens) / rate))
