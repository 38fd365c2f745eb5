"""Token lookups with a short cache, so a revocation takes effect within the TTL everywhere,
and a control-database outage does not turn away clients whose tokens were recently seen.

The cache is two LRUs, each bounded in entries and bytes: tokens the database called valid
(with their grace), and tokens it did not know. A flood of unknown tokens (well-formed ones:
the gate refuses any other shape before it asks) only ever evicts other unknown tokens, never a
valid token or the grace entry that keeps a client working through a control-database outage.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
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
        max_bytes: int = 16 << 20,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lookup = lookup
        self._ttl = ttl
        self._grace = grace
        self._clock = clock
        self._valid = _Lru[_Entry[Info]](max_entries, max_bytes)
        # Unknown tokens get a tenth of the room: enough to absorb retries of a bad token.
        self._unknown = _Lru[_Entry[Info]](max(1, max_entries // 10), max(1, max_bytes // 10))
        # One lookup per token at a time: a burst of requests with a token whose entry expired
        # shares a single database query instead of exhausting the connection pool.
        self._inflight: dict[str, asyncio.Future[Info | None]] = {}

    async def get(self, token: str) -> Info | None:
        now = self._clock()
        entry = self._valid.get(token) or self._unknown.get(token)
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
        if info is None:
            self._valid.pop(token)  # revoked: its grace ends here
            self._unknown.put(token, _Entry(info, now, 0.0))
        else:
            self._unknown.pop(token)
            self._valid.put(token, _Entry(info, now, now))
        return info

    def __len__(self) -> int:
        return len(self._valid) + len(self._unknown)


V = TypeVar("V")

# What one entry costs beyond its token's characters (dict slot, entry object, info), roughly.
_ENTRY_OVERHEAD = 200


class _Lru(Generic[V]):
    """A least-recently-used map bounded in entries and in (estimated) bytes."""

    def __init__(self, max_entries: int, max_bytes: int) -> None:
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self._bytes = 0
        self._items: OrderedDict[str, V] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: str) -> V | None:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def pop(self, key: str) -> None:
        if self._items.pop(key, None) is not None:
            self._bytes -= len(key) + _ENTRY_OVERHEAD

    def put(self, key: str, value: V) -> None:
        self.pop(key)
        self._items[key] = value
        self._bytes += len(key) + _ENTRY_OVERHEAD
        while self._items and (
            len(self._items) > self._max_entries or self._bytes > self._max_bytes
        ):
            old, _ = self._items.popitem(last=False)
            self._bytes -= len(old) + _ENTRY_OVERHEAD
