"""The lease loop every loader runs: lease a table's batches from the spool, load them into the
client's warehouse exactly once, acknowledge; on failure, nack with the warehouse's verdict.

Worker threads each run the loop. What keeps one client's warehouse from costing the others:

- ``workers`` slots: a thread needs one to lease. A load still running after
  ``stalled_load_s`` gives its slot back and goes on beside the others (a hung or locked
  warehouse then holds a thread and a session, not the loader's capacity); at most
  ``max_stalled_loads`` threads do so, so threads = workers + max_stalled_loads;
- ``max_load_s``: past it a load is cancelled, its lease no longer extended, and it fails as
  transient (the spool's back-off then keeps that table out of the way);
- warehouse sessions come from one process-wide pool of at most ``max_connections``
  (``sessions.SessionPool``), keyed by client and destination version (or, for a warehouse
  whose sessions hold nothing of a client, by what they are opened with: ``SharesSessions``),
  idle ones closed.

The runner drives a warehouse only through ``protocol.Warehouse``; the lease's clock is
``watch.LeaseWatch``, the clients' destinations ``destination_cache.Destinations``, the
counters ``metrics``.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import socket
import threading
import time
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from common import destination_config, netpolicy
from common.metrics import client_label
from common.s3 import Objects
from common.spool_client import Lease, LeasedBatch, SpoolClient, SpoolConflict, SpoolUnavailable
from common.wire import Header
from services.loaders.core import faults, native, notes
from services.loaders.core.destination_cache import Destinations
from services.loaders.core.errors import LoadError, PermanentError, TransientError
from services.loaders.core.metrics import (
    BATCHES,
    FRESHNESS,
    LOAD_SECONDS,
    LOADS,
    OPENED,
    REJECTED,
    ROWS,
    SCHEMA_CHANGES,
    SESSIONS,
)
from services.loaders.core.protocol import Destination, SessionT, Warehouse
from services.loaders.core.reader import Event, batch_events, s3_chunks
from services.loaders.core.sessions import SessionPool
from services.loaders.core.settings import LoaderSettings
from services.loaders.core.watch import LeaseWatch

log = logging.getLogger("skein.loader")
T = TypeVar("T")

# Request ids named in one "loaded" log line, at most (a lease may hold thousands of requests).
_LOGGED_REQUEST_IDS = 100


class Runner(Generic[SessionT]):
    def __init__(
        self, settings: LoaderSettings, warehouse: Warehouse[SessionT], destinations: Destinations
    ) -> None:
        self.settings = settings
        self.warehouse = warehouse
        self.destinations = destinations
        self.kind = warehouse.type  # the destination type this loader leases for
        self.owner = f"{warehouse.type}@{socket.gethostname()}"
        # What every lease asks of the spool (lease, and ack-and-lease-next).
        self.limits: dict[str, int] = {
            "lease_seconds": settings.lease_seconds,
            "max_batches": settings.max_batches,
            "max_bytes": settings.max_bytes,
            "max_tables": settings.max_tables,
        }
        self.stop = threading.Event()
        self.sessions = SessionPool(
            warehouse.close, cap=settings.max_connections, idle_s=settings.idle_connection_s
        )
        SESSIONS.labels(self.kind).set_function(lambda: self.sessions.open_count)
        self._slots = threading.BoundedSemaphore(settings.workers)
        # Checked again at every connect: the host's address may have changed since it was set.
        self.policy = netpolicy.from_settings(settings)
        # Batch objects, read on the lean client (``common.s3.Objects``), S3's brief failures
        # retried twice before a load fails (as boto3's standard mode did).
        self._objects = Objects(
            settings,
            timeout_s=60.0,
            connect_timeout_s=5.0,
            pool_size=settings.workers + settings.max_stalled_loads,
            retries=2,
        )
        self._threads: list[threading.Thread] = []
        # Batch objects' record lines handed over unread (``RecordText``) to a warehouse whose
        # plans run natively (``native``); every other reads them line by line.
        self._text = settings.native_plans and native.stages_text(warehouse)

    # -- lifecycle
    def start(self) -> None:
        for n in range(self.settings.workers + self.settings.max_stalled_loads):
            thread = threading.Thread(target=self._work, args=(n,), name=f"loader-{n}")
            thread.start()
            self._threads.append(thread)
        reaper = threading.Thread(target=self._reap, name="session-reaper", daemon=True)
        reaper.start()

    def join(self, timeout: float | None = None) -> None:
        for thread in self._threads:
            thread.join(timeout)
        self.sessions.close_all()

    def _reap(self) -> None:
        every = min(5.0, self.settings.idle_connection_s / 4)
        while not self.stop.wait(every):
            self.sessions.reap()

    # -- the loop
    def _work(self, n: int) -> None:
        owner = f"{self.owner}/{n}"
        with SpoolClient(
            self.settings.spool_url, self.settings.spool_token.get_secret_value()
        ) as spool:
            lease: Lease | None = None
            slot = False  # holds one of the workers' slots
            while not self.stop.is_set():
                try:
                    if not slot:
                        slot = self._slots.acquire(timeout=0.5)
                        continue
                    if lease is None:
                        lease = self._lease(spool, owner)
                        if lease is None:
                            self.stop.wait(self.settings.poll_interval_s)
                            continue
                    if lease.more:
                        slot, lease = self._tables(spool, owner, lease)
                        continue
                    watch = LeaseWatch(self.settings, lease, self._slots)
                    outcome = self._handle(lease, watch)
                    if isinstance(outcome, Loaded):
                        faults.hit("after_commit")
                    slot = not watch.stalled  # a stalled load gave its slot away
                    lease = self._finish(spool, owner, lease, outcome, chain=slot)
                except SpoolUnavailable as exc:
                    log.warning("spool unavailable", extra={"err": str(exc)})
                    lease = None
                    self.stop.wait(2.0)
            if slot:
                self._slots.release()

    def _tables(self, spool: SpoolClient, owner: str, lease: Lease) -> tuple[bool, Lease | None]:
        """A lease of several tables of one client: each loaded in turn, as a lease of its own
        (its own transaction and exactly-once record) under one watch for the whole lease (one
        clock: extensions from the lease's start, the slot given back once); a table that fails
        is nacked at once (its batches only), the loaded ones are acknowledged together at the
        end, with the next lease in the same call while this thread still holds its slot; a
        lease found gone stops it. Returns (holds a slot, next lease)."""
        watch = LeaseWatch(self.settings, lease, self._slots)  # one clock for every table
        loaded: list[tuple[list[int], dict[str, Any] | None]] = []
        for table in lease.tables:
            if watch.lost or watch.timed_out:
                # The lease is gone (its tables may be another leaser's now), or past
                # max_load_s: the tables not loaded go back when it expires.
                break
            outcome = self._handle(table, watch)
            ids = [b.batch_id for b in table.batches]
            if isinstance(outcome, Loaded):
                faults.hit("after_commit")
                loaded.append((ids, outcome.report(table, self.kind)))
                continue
            nack = functools.partial(spool.nack, lease.lease_token, outcome.kind, str(outcome), ids)
            if self._settle(nack) is None:
                break  # lost (409): what committed is covered by the next leaser's check
        slot = not watch.stalled  # a stalled load gave the slot away (once)
        if not loaded:
            return slot, None
        kind = self.kind if slot else None
        return slot, self._settle(
            lambda: spool.acks_and_lease(lease.lease_token, loaded, kind, owner, **self.limits)
        )

    def _settle(self, call: Callable[[], T]) -> T | None:
        """An ack or nack, retried while the spool is briefly unreachable (60 s); None when
        the lease is gone (409: the next leaser's exactly-once check covers what committed)."""
        deadline = time.monotonic() + 60
        while True:
            try:
                return call()
            except SpoolConflict as exc:
                log.warning("lease lost before its ack/nack", extra={"err": str(exc)})
                return None
            except SpoolUnavailable:
                if time.monotonic() > deadline or self.stop.is_set():
                    raise
                time.sleep(1.0)

    def _lease(self, spool: SpoolClient, owner: str) -> Lease | None:
        return spool.lease(self.kind, owner, **self.limits)

    def _handle(
        self, lease: Lease, watch: LeaseWatch, *, retry_stale: bool = True
    ) -> Loaded | LoadError:
        """Load the lease; what it wrote, else the classified failure."""
        started = time.monotonic()
        request_ids: dict[str, None] = {}  # in load order, for the log line (tracing)
        reused = False
        owner: Hashable = ("client", lease.client_id)
        try:
            destination = self.destinations.get(lease.client_id, lease.destination_version)
            if destination is None:
                raise PermanentError(f"client {lease.client_id} has no destination any more")
            if destination.type != self.kind:
                # The spool moves waiting batches to the new type; this lease goes back to wait.
                raise TransientError(
                    f"client {lease.client_id}'s destination is now {destination.type}, "
                    f"not {self.kind}: its batches move to the {destination.type} loader"
                )
            refusal = destination_config.platform_refusal(
                destination.type,
                destination.config,
                destination.secrets,
                [{"kind": k, "value": v} for k, v in destination.grants],
            )
            if refusal:
                raise PermanentError(f"destination refused: {refusal}")
            owner, version = self._session_key(destination)
            with self.sessions.session(owner, version, lambda: self._open(destination)) as lent:
                reused = lent.reused
                try:
                    with (
                        watch.running(lambda: self.warehouse.cancel(lent.session)),
                        notes.recording() as noted,
                    ):
                        rows, rejected = self._load(destination, lease, lent.session, request_ids)
                except BaseException:
                    lent.discard()  # a failed session is never reused (its state is unknown)
                    raise
        except Exception as exc:
            failure = self.warehouse.classify(exc)
            if watch.timed_out:
                failure = TransientError(
                    f"load took longer than {self.settings.max_load_s:g} s "
                    f"(SKEIN_LOADER_{self.kind.upper()}_MAX_LOAD_S): {failure}"
                )
            elif isinstance(failure, TransientError) and reused and retry_stale:
                # A cached connection dies with a warehouse restart and fails its next use:
                # try once on a new one before the lease pays a back-off round for it. Its
                # client's other idle sessions died with it: none of them is tried.
                self.sessions.discard_idle(owner)
                log.info(
                    "retrying on a new warehouse connection",
                    extra={"client_id": lease.client_id, "err": str(failure)},
                )
                return self._handle(lease, watch, retry_stale=False)
            LOADS.labels(self.kind, client_label(lease.client_id), failure.kind).inc()
            log.warning(
                "load failed",
                extra={
                    "client_id": lease.client_id,
                    "table": lease.table_name,
                    "batches": [b.batch_id for b in lease.batches],
                    "kind": failure.kind,
                    "err": str(failure),
                },
            )
            return failure

        elapsed = time.monotonic() - started
        client = client_label(lease.client_id)
        LOADS.labels(self.kind, client, "ok").inc()
        LOAD_SECONDS.labels(self.kind).observe(elapsed)
        ROWS.labels(self.kind, client).inc(rows)
        REJECTED.labels(self.kind, client).inc(rejected)
        if noted.schema_changes:
            SCHEMA_CHANGES.labels(self.kind, client).inc(len(noted.schema_changes))
        BATCHES.labels(self.kind).inc(len(lease.batches))
        now = datetime.now(UTC)
        for batch in lease.batches:
            received = datetime.fromisoformat(batch.oldest_received_at)
            FRESHNESS.labels(self.kind).observe(max(0.0, (now - received).total_seconds()))
        log.info(
            "loaded",
            extra={
                "client_id": lease.client_id,
                "table": lease.table_name,
                "batches": len(lease.batches),
                "batch_ids": [b.batch_id for b in lease.batches],
                "request_ids": list(request_ids)[:_LOGGED_REQUEST_IDS],
                "rows": rows,
                "rejected": rejected,
                "ms": round(elapsed * 1000, 1),
            },
        )
        return Loaded(rows, rejected, noted)

    def _session_key(self, destination: Destination) -> tuple[Hashable, Hashable]:
        """The session pool's key: the destination's identity where the warehouse shares
        sessions (``SharesSessions``), else the client and its destination's version."""
        identity = getattr(self.warehouse, "session_identity", None)
        if identity is not None:
            return ("shared", identity(destination)), ""
        return ("client", destination.client_id), destination.version

    def _open(self, destination: Destination) -> SessionT:
        try:
            vetted = netpolicy.check_destination(self.policy, destination.type, destination.config)
        except netpolicy.DestinationRefused as exc:
            raise PermanentError(f"destination refused by the network policy: {exc}") from None
        destination = destination.pinned_to(vetted)
        OPENED.labels(self.kind).inc()
        return self.warehouse.open(destination)

    def _load(
        self,
        destination: Destination,
        lease: Lease,
        session: SessionT,
        request_ids: dict[str, None],
    ) -> tuple[int, int]:
        ids = [b.batch_id for b in lease.batches]
        done = self.warehouse.already_loaded(session, destination, ids)
        todo = [b for b in lease.batches if b.batch_id not in done]
        if not todo:
            return 0, 0
        stream = self._events(todo, request_ids)
        return self.warehouse.load(session, destination, lease, [b.batch_id for b in todo], stream)

    def _events(self, batches: list[LeasedBatch], request_ids: dict[str, None]) -> Iterator[Event]:
        """The batches' header and record events; notes each header's request id on the way."""
        for batch in batches:
            chunks = s3_chunks(self._objects, batch.object_key)
            for event in batch_events(chunks, text=self._text):
                if isinstance(event, Header) and len(request_ids) < _LOGGED_REQUEST_IDS:
                    request_ids[event.request_id] = None
                yield event

    def _finish(
        self,
        spool: SpoolClient,
        owner: str,
        lease: Lease,
        outcome: Loaded | LoadError,
        *,
        chain: bool = True,
    ) -> Lease | None:
        """Ack (and, with ``chain``, take the next lease in the same call) or nack (``_settle``:
        retried while the spool is briefly unreachable; a lease gone is None)."""
        if isinstance(outcome, Loaded):
            report = outcome.report(lease, self.kind)
            if chain:
                return self._settle(
                    lambda: spool.ack_and_lease(
                        lease.lease_token, self.kind, owner, report=report, **self.limits
                    )
                )
            self._settle(lambda: spool.ack(lease.lease_token, report=report))
            return None
        self._settle(lambda: spool.nack(lease.lease_token, outcome.kind, str(outcome)))
        return None


@dataclass(frozen=True)
class Loaded:
    """A lease's load committed: rows written, records rejected and what it noted (schema
    changes, rejected records): the ack's report, from which the spool writes the client's
    events, schema log and kept rejections."""

    rows: int
    rejected: int
    noted: notes.Notes = dataclasses.field(default_factory=notes.Notes)

    def report(self, lease: Lease, kind: str) -> dict[str, Any]:
        return {
            "num_rows": self.rows,
            "num_rows_rejected": self.rejected,
            "destination_table_name": lease.table_name,
            "destination_type": kind,
            **self.noted.report(),
        }
