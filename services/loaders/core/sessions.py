"""Warehouse sessions of one loader process: at most ``cap`` open in all, shared by its workers.

A warehouse server is shared by many clients (each with its own schema), and its connection
slots are the scarcest thing it has: one session per client per worker, never closed, filled
``max_connections`` at about a hundred clients and locked everyone out, the superuser included.
So a loader process holds at most ``cap`` sessions (``SKEIN_LOADER_<TYPE>_MAX_CONNECTIONS``):

- a session is keyed by (client, destination version): a changed destination never reuses a
  session opened with its old settings, and the old one is closed when it is next passed over;
- a checked-out session belongs to one worker until it is given back (or discarded after a
  failure); an idle one is reused by the next load of the same key;
- at the cap, the least recently used idle session is closed (and its close awaited) before a
  new one opens; when every session is checked out the caller waits (the runner keeps its
  threads at or below the cap, so that wait is short and never a deadlock);
- ``reap`` closes sessions idle longer than ``idle_s`` (the runner calls it every few seconds).

Opening and closing happen outside the lock (they can take a connect timeout). A slot is
reserved before a session opens and released only once a session has closed, so sessions
open, opening and closing never pass the cap together.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Generic

from services.loaders.core.protocol import SessionT

log = logging.getLogger("skein.loader.sessions")


@dataclass
class Lent(Generic[SessionT]):
    """A checked-out session. ``reused`` says it served an earlier load (it may have died with
    a warehouse restart since); ``discard()`` closes it instead of giving it back."""

    key: tuple[Hashable, Hashable]
    session: SessionT
    reused: bool
    broken: bool = field(default=False)

    def discard(self) -> None:
        self.broken = True


class SessionPool(Generic[SessionT]):
    def __init__(
        self,
        close_session: Callable[[SessionT], None],
        *,
        cap: int,
        idle_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if cap < 1:
            raise ValueError("a session pool needs a cap of at least 1")
        self._close = close_session
        self._cap = cap
        self._idle_s = idle_s
        self._clock = clock
        self._cond = threading.Condition()
        # Idle sessions, least recently used first: serial -> (key, session, returned_at).
        self._idle: OrderedDict[int, tuple[tuple[Hashable, Hashable], SessionT, float]] = (
            OrderedDict()
        )
        self._busy = 0  # checked out, or being opened
        self._closing = 0  # popped to be closed: still open on the server until close returns
        self._serial = 0
        self._closed = False

    # -- what the runner and the tests read
    @property
    def open_count(self) -> int:
        with self._cond:
            return self._count()

    def _count(self) -> int:
        return self._busy + len(self._idle) + self._closing

    @property
    def cap(self) -> int:
        return self._cap

    # -- checkout
    @contextmanager
    def session(
        self, client: Hashable, version: Hashable, opener: Callable[[], SessionT]
    ) -> Iterator[Lent[SessionT]]:
        """Lend a session of ``client``'s destination at ``version`` (opened with ``opener``
        when none is idle). Idle sessions of the client at another version are closed."""
        lent = self._checkout((client, version), opener)
        try:
            yield lent
        except BaseException:
            self._checkin(lent)
            raise
        self._checkin(lent)

    def _checkout(
        self, key: tuple[Hashable, Hashable], opener: Callable[[], SessionT]
    ) -> Lent[SessionT]:
        while True:
            stale: list[SessionT] = []
            reserved = False
            with self._cond:
                if self._closed:
                    raise RuntimeError("session pool closed")
                found = None
                outdated = []
                for serial, (k, _session, _at) in reversed(self._idle.items()):
                    if k == key:
                        found = found if found is not None else serial
                    elif k[0] == key[0]:
                        outdated.append(serial)
                stale.extend(self._idle.pop(serial)[1] for serial in outdated)
                self._closing += len(outdated)
                if found is not None:
                    session = self._idle.pop(found)[1]
                    self._busy += 1
                elif self._count() < self._cap:
                    self._busy += 1
                    reserved = True
                elif self._idle:  # at the cap: close the least recently used idle one first
                    stale.append(self._idle.popitem(last=False)[1][1])
                    self._closing += 1
                elif not stale:  # every session is lent: wait for one to come back
                    self._cond.wait(1.0)
            for old in stale:
                self._close_quietly(old)
            if found is not None:
                return Lent(key, session, reused=True)
            if reserved:
                break
        try:
            session = opener()
        except BaseException:
            with self._cond:
                self._busy -= 1
                self._cond.notify()
            raise
        return Lent(key, session, reused=False)

    def _checkin(self, lent: Lent[SessionT]) -> None:
        with self._cond:
            self._busy -= 1
            keep = not lent.broken and not self._closed
            if keep:
                self._serial += 1
                self._idle[self._serial] = (lent.key, lent.session, self._clock())
            else:
                self._closing += 1
            self._cond.notify()
        if not keep:
            self._close_quietly(lent.session)

    def discard_idle(self, client: Hashable) -> int:
        """Close every idle session of ``client``: one of them just failed as a whole server
        does (a restart kills them all), so none is handed out again."""
        with self._cond:
            gone = [serial for serial, (k, _s, _at) in self._idle.items() if k[0] == client]
            sessions = [self._idle.pop(serial)[1] for serial in gone]
            self._closing += len(sessions)
        for session in sessions:
            self._close_quietly(session)
        return len(sessions)

    # -- housekeeping
    def reap(self) -> int:
        """Close sessions idle longer than ``idle_s``; returns how many."""
        now = self._clock()
        old: list[SessionT] = []
        with self._cond:
            for serial, (_k, session, at) in list(self._idle.items()):
                if now - at >= self._idle_s:
                    del self._idle[serial]
                    old.append(session)
            self._closing += len(old)
        for session in old:
            self._close_quietly(session)
        return len(old)

    def close_all(self) -> None:
        with self._cond:
            self._closed = True
            idle = [session for _k, session, _at in self._idle.values()]
            self._idle.clear()
            self._closing += len(idle)
            self._cond.notify_all()
        for session in idle:
            self._close_quietly(session)

    def _close_quietly(self, session: SessionT) -> None:
        """Close a session popped for closing (counted in ``_closing`` until it is shut)."""
        try:
            self._close(session)
        except Exception as exc:  # a session that cannot even close is gone anyway
            log.debug("closing a warehouse session failed", extra={"err": str(exc)})
        finally:
            with self._cond:
                self._closing -= 1
                self._cond.notify_all()
