"""Per-client quotas at the gate: what one client may take of a gate that every client shares.

Each has a default (``SKEIN_GATE_*``) that a client's own setting (``skein clients set-limits``)
overrides; over any of them the request answers 429 with a JSON body naming the limit, and
nothing of it is accepted:

- requests per second and body bytes per second: token buckets per process (the rate split
  across the gate's processes, as ``ratelimit.RateLimiter`` does);
- concurrent requests: counted per process (the limit split likewise, at least one each);
- distinct tables: a table the client has not sent before is admitted by the control database
  (``common.client_limits.admit_tables``, all or none of a request's new tables, under a
  per-client lock), so the count holds across every gate process; tables already admitted are
  remembered in a bounded LRU and cost nothing. The spool's retention forgets tables idle past it.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Protocol

from services.gate.auth import _Lru
from services.gate.errors import ApiError
from services.gate.ratelimit import RateLimiter
from services.gate.settings import GateSettings


class Limited(Protocol):
    """A client's own limits, as its token lookup found them (None: the gate's default)."""

    @property
    def client_id(self) -> int: ...
    @property
    def rate_limit_rps(self) -> int | None: ...
    @property
    def bytes_per_s(self) -> int | None: ...
    @property
    def max_concurrent_requests(self) -> int | None: ...
    @property
    def max_tables(self) -> int | None: ...


# (client id, new table names, the client's limit) -> the names refused (all of them, or none).
TableAdmission = Callable[[int, list[str], int], Awaitable[list[str]]]


def over_quota(limit: str, value: float, message: str, retry_after: int | None) -> ApiError:
    headers = {"Retry-After": str(retry_after)} if retry_after else {}
    shown: float = int(value) if float(value).is_integer() else value
    return ApiError(
        429,
        {"status": "ERROR", "message": message, "limit": limit, "value": shown},
        headers,
    )


class Quotas:
    def __init__(self, settings: GateSettings, admit: TableAdmission) -> None:
        self._settings = settings
        self._admit = admit
        self._requests = RateLimiter(settings.rate_limit_burst_s, settings.workers)
        self._bytes = RateLimiter(settings.rate_limit_burst_s, settings.workers)
        self._in_flight: dict[int, int] = {}
        self._known = _Lru[bool](settings.known_tables_cache, settings.known_tables_cache * 300)

    def check_rate(self, client: Limited) -> None:
        rps = _pick(client.rate_limit_rps, self._settings.rate_limit_rps)
        wait = self._requests.retry_after(client.client_id, rps)
        if wait:
            raise over_quota("requests_per_s", rps, "Rate limit exceeded for this client.", wait)

    def charge_bytes(self, client: Limited, size: int) -> None:
        limit = _pick(client.bytes_per_s, self._settings.bytes_per_s)
        wait = self._bytes.retry_after(client.client_id, limit, float(size))
        if wait:
            raise over_quota(
                "bytes_per_s",
                limit,
                f"This client's limit of {limit:,.0f} body bytes per second is exceeded.",
                wait,
            )

    @asynccontextmanager
    async def concurrent(self, client: Limited) -> AsyncIterator[None]:
        limit = _pick(client.max_concurrent_requests, self._settings.max_concurrent_requests)
        here = max(1, math.ceil(limit / self._settings.workers)) if limit else 0
        running = self._in_flight.get(client.client_id, 0)
        if here and running >= here:
            raise over_quota(
                "concurrent_requests",
                limit,
                f"This client already has its limit of {limit:,.0f} requests in progress.",
                1,
            )
        self._in_flight[client.client_id] = running + 1
        try:
            yield
        finally:
            left = self._in_flight[client.client_id] - 1
            if left:
                self._in_flight[client.client_id] = left
            else:
                del self._in_flight[client.client_id]

    async def admit_tables(self, client: Limited, names: list[str]) -> None:
        limit = int(_pick(client.max_tables, self._settings.max_tables_per_client))
        if not limit:
            return
        new = sorted({n for n in names if self._known.get(f"{client.client_id}/{n}") is None})
        if not new:
            return
        refused = await self._admit(client.client_id, new, limit)
        if refused:
            raise over_quota(
                "tables",
                limit,
                f"This client's limit of {limit} distinct tables is reached; "
                f"new table(s) refused: {', '.join(refused[:5])}",
                None,
            )
        for name in new:
            self._known.put(f"{client.client_id}/{name}", True)


def _pick(own: int | None, default: float) -> float:
    return float(own) if own is not None else default
