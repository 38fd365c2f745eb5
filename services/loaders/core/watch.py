"""One lease's clock while it loads (``LeaseWatch``), on a thread beside the load: extending
the lease, giving the worker slot back once the load counts as stalled, cancelling it past
``max_load_s``."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from common.spool_client import Lease, SpoolClient, SpoolConflict, SpoolUnavailable
from services.loaders.core.metrics import STALLED
from services.loaders.core.settings import LoaderSettings

log = logging.getLogger("skein.loader")


class LeaseWatch:
    """One lease's clock while it loads: extends the lease every third of its length, gives the
    worker slot back once the load counts as stalled, and past ``max_load_s`` stops extending
    and cancels the load (``timed_out``).

    A lease of several tables keeps one watch for all of them (``running`` once per table):
    its clock starts when the lease does, so extensions keep the later tables leased, the slot
    is given back once, and ``max_load_s`` bounds the whole lease. ``lost``: an extension
    found the lease gone (another leaser may hold its tables now)."""

    def __init__(
        self, settings: LoaderSettings, lease: Lease, slots: threading.BoundedSemaphore
    ) -> None:
        self._settings = settings
        self._lease = lease
        self._slots = slots
        self._started = time.monotonic()
        self._extend_every = max(1.0, settings.lease_seconds / 3)
        self._next_extend = self._started + self._extend_every
        self.stalled = False
        self.timed_out = False
        self.lost = False

    @contextmanager
    def running(self, cancel: Callable[[], None]) -> Iterator[None]:
        done = threading.Event()
        thread = threading.Thread(
            target=self._run, args=(done, cancel), daemon=True, name="lease-watch"
        )
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join(5)

    def _run(self, done: threading.Event, cancel: Callable[[], None]) -> None:
        settings = self._settings
        seconds = settings.lease_seconds
        stall_at = (
            self._started + settings.stalled_load_s
            if settings.max_stalled_loads and not self.stalled
            else math.inf
        )
        deadline = self._started + settings.max_load_s
        token = settings.spool_token.get_secret_value()
        # Opened at the first extension only: most loads end before one (and a client's TLS
        # context costs milliseconds of CPU that every lease would pay).
        spool: SpoolClient | None = None
        try:
            while True:
                now = time.monotonic()
                wake = min(self._next_extend, deadline, stall_at)
                if done.wait(max(0.0, wake - now)):
                    return
                now = time.monotonic()
                if now >= deadline:
                    self.timed_out = True
                    log.warning(
                        "load passed its time limit: cancelling it",
                        extra={"client_id": self._lease.client_id, "table": self._lease.table_name},
                    )
                    try:
                        cancel()
                    except Exception as exc:
                        log.warning("cancelling the load failed", extra={"err": str(exc)})
                    return
                if now >= stall_at:
                    stall_at = math.inf
                    self.stalled = True
                    self._slots.release()
                    STALLED.labels(self._lease.destination_type).inc()
                if now >= self._next_extend:
                    self._next_extend = now + self._extend_every
                    if spool is None:
                        spool = SpoolClient(settings.spool_url, token)
                    try:
                        spool.extend(self._lease.lease_token, seconds)
                    except SpoolConflict as exc:
                        self.lost = True
                        log.warning("lease extension failed", extra={"err": str(exc)})
                    except SpoolUnavailable as exc:
                        log.warning("lease extension failed", extra={"err": str(exc)})
        finally:
            if spool is not None:
                spool.close()
