"""Token lookups with a short cache, so a revocation takes effect within the TTL everywhere,
and a control-database outage does not turn away clients whose tokens were recently seen."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

Info = TypeVar("Info")


class LookupUnavailable(Exception):
    """The control database could not be asked and the token is not known from cache."""


@dataclass
class _Entry(Generic[Info]):
    info: Info | None  # None: unknown or revoked
    checked_at: float
    valid_at: float  # when the DB last said the token is valid (0 if never)


class TokenCache(Generic[Info]):
    """token -> lookup result; fresh for ``ttl`` seconds, usable for ``grace`` if the DB is down."""

    def __init__(
        self,
        lookup: Callable[[str], Awaitable[Info | None]],
        ttl: float,
        grace: float,
        max_entries: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lookup = lookup
        self._ttl = ttl
        self._grace = grace
        self._max_entries = max_entries
        self._clock = clock
        self._entries: dict[str, _Entry[Info]] = {}

    async def get(self, token: str) -> Info | None:
        now = self._clock()
        entry = self._entries.get(token)
        if entry is not None and now - entry.checked_at < self._ttl:
            return entry.info
        try:
            info = await self._lookup(token)
        except Exception as exc:
            if entry is not None and entry.info is not None and now - entry.valid_at < self._grace:
                return entry.info
            raise LookupUnavailable(str(exc)) from exc
        if len(self._entries) >= self._max_entries:
            self._entries.clear()  # crude but bounded; entries refill within one TTL
        self._entries[token] = _Entry(info, now, now if info is not None else 0.0)
        return info
