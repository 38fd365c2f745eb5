"""Token lookups with a short cache, so a revocation takes effect within the TTL everywhere,
and a control-database outage does not turn away clients whose tokens were recently seen."""

from __future__ import annotations

import asyncio
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
        # One lookup per token at a time: a burst of requests with a token whose entry expired
        # shares a single database query instead of exhausting the connection pool.
        self._inflight: dict[str, asyncio.Future[Info | None]] = {}

    async def get(self, token: str) -> Info | None:
        now = self._clock()
        entry = self._entries.get(token)
        if entry is not None and now - entry.checked_at < self._ttl:
            return entry.info
        pending = self._inflight.get(token)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[Info | None] = asyncio.get_running_loop().create_future()
        self._inflight[token] = future
        try:
            info = await self._refresh(token, entry, now)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters re-raise it, nobody else must
            raise
        else:
            future.set_result(info)
            return info
        finally:
            del self._inflight[token]

    async def _refresh(self, token: str, entry: _Entry[Info] | None, now: float) -> Info | None:
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
