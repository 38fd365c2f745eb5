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
"""

from __future__ import annotations

import dataclasses
import logging
import math
import socket
import threading
import time
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from botocore.config import Config
from prometheus_client import Counter, Gauge, Histogram

from common import control, db, netpolicy
from common.metrics import client_label
from common.s3 import client as s3_client
from common.spool_client import Lease, SpoolClient, SpoolConflict, SpoolUnavailable
from common.wire import Header
from services.loaders.core import faults, notes
from services.loaders.core.errors import LoadError, PermanentError, TransientError
from services.loaders.core.reader import Record, events, lines_of, s3_chunks
from services.loaders.core.sessions import SessionPool
from services.loaders.core.settings import LoaderSettings

log = logging.getLogger("skein.loader")

# Request ids named in one "loaded" log line, at most (a lease may hold thousands of requests).
_LOGGED_REQUEST_IDS = 100

# client_id labels are bounded by common.metrics.client_label; tables are never labels.
LOADS = Counter(
    "skein_loader_loads_total",
    "Lease loads by outcome (ok, transient, permanent)",
    ["destination_type", "client_id", "result"],
)
ROWS = Counter("skein_loader_rows_total", "Parent rows written", ["destination_type", "client_id"])
BATCHES = Counter("skein_loader_batches_total", "Batches loaded", ["destination_type"])
REJECTED = Counter(
    "skein_loader_rejected_records_total",
    "Records sent to _sdc_rejected",
    ["destination_type", "client_id"],
)
SCHEMA_CHANGES = Counter(
    "skein_loader_schema_changes_total",
    "Schema changes loads made (tables created, columns added, widened or split)",
    ["destination_type", "client_id"],
)
LOAD_SECONDS = Histogram(
    "skein_loader_load_duration_seconds",
    "Time to load one lease",
    ["destination_type"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
FRESHNESS = Histogram(
    "skein_loader_freshness_seconds",
    "Loaded at minus received at (of the oldest record of each loaded batch)",
    ["destination_type"],
    buckets=(1, 2, 5, 10, 15, 30, 60, 120, 300, 900, 3600),
)
SESSIONS = Gauge(
    "skein_loader_warehouse_sessions",
    "Warehouse sessions this loader process holds open (at most its MAX_CONNECTIONS)",
    ["destination_type"],
)
OPENED = Counter(
    "skein_loader_warehouse_sessions_opened_total",
    "Warehouse sessions opened",
    ["destination_type"],
)
STALLED = Counter(
    "skein_loader_stalled_loads_total",
    "Loads that ran past STALLED_LOAD_S and gave their worker slot to other work",
    ["destination_type"],
)


@dataclass(frozen=True)
class Destination:
    client_id: int
    type: str
    config: dict[str, Any]
    secrets: dict[str, str]
    # When the destination was last set: sessions opened under another version are not reused.
    version: str = ""
    # What an operator allowed this client to do with the platform's credentials.
    grants: tuple[tuple[str, str], ...] = ()
    # (host, address) the network policy vetted just before this session was opened: a loader
    # that can connect to an address (libpq's hostaddr) does, closing the DNS-rebinding window.
    pinned: tuple[tuple[str, str], ...] = ()

    def pinned_to(self, vetted: dict[str, list[str]]) -> Destination:
        """This destination pinned to the first address the network policy vetted per host
        (``netpolicy.check_destination``'s answer)."""
        pins = tuple((host, found[0]) for host, found in vetted.items() if found)
        return dataclasses.replace(self, pinned=pins)


class Warehouse(Protocol):
    """What a warehouse loader implements (see services/loaders/postgres/)."""

    type: str

    def open(self, destination: Destination) -> Any:
        """A session/connection to the client's warehouse."""

    def close(self, session: Any) -> None: ...

    def already_loaded(self, session: Any, destination: Destination, ids: list[int]) -> set[int]:
        """Which of these batch ids this warehouse already holds (committed before a crash)."""

    def load(
        self,
        session: Any,
        destination: Destination,
        lease: Lease,
        batch_ids: list[int],
        stream: Iterator[Header | Record],
    ) -> tuple[int, int]:
        """Load in one transaction with the batch ids; return (rows written, rejected)."""

    def classify(self, exc: BaseException) -> LoadError:
        """Transient (retry with back-off) or permanent (park the batch)."""

    def cancel(self, session: Any) -> None:
        """Interrupt what the session is running (from another thread); best effort."""

    def probe(self, session: Any, destination: Destination) -> str:
        """One round trip to the warehouse, described (``skein destinations test``)."""


class SharesSessions(Protocol):
    """A warehouse whose sessions carry nothing of the client that opened them (no session
    state, no client-specific target) may say so: destinations with the same identity (every
    setting and secret the session is opened with) then share idle sessions. Clients with the
    same credentials on one server are no more able to reach each other through a shared
    session than through their own. Checks that depend on the client (the platform's grants)
    run for every load, not only when a session opens."""

    def session_identity(self, destination: Destination) -> Hashable: ...


class Destinations:
    """Clients' destinations from the control DB, cached briefly."""

    def __init__(self, dsn: str, secret_key: str, ttl: float) -> None:
        # Pooled: a burst of new clients (a cache miss each) must not open a control-database
        # connection per lease.
        self._db = db.ControlDb(dsn, size=2, name="skein-loader-destinations")
        self._secret_key = secret_key
        self._ttl = ttl
        self._cache: dict[int, tuple[float, Destination | None]] = {}
        self._lock = threading.Lock()

    def _fetch(self, client_id: int) -> Callable[[Any], dict[str, Any] | None]:
        def fetch(conn: Any) -> dict[str, Any] | None:
            try:
                return control.get_destination(conn, self._secret_key, client_id, reveal=True)
            finally:
                conn.rollback()  # a pooled connection goes back with no transaction open

        return fetch

    def get(self, client_id: int, version: int | None = None) -> Destination | None:
        """The client's destination, from the cache unless it expired or ``version`` (the
        lease's ``destination_version``) says the destination changed since it was read."""
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(client_id)
        if hit and now - hit[0] < self._ttl and (version is None or _version(hit[1]) == version):
            return hit[1]
        try:
            raw = self._db.run(self._fetch(client_id))
        except Exception as exc:
            raise TransientError(f"control database unavailable: {exc}") from exc
        found = (
            None
            if raw is None
            else Destination(
                client_id,
                raw["type"],
                raw["config"],
                raw.get("secrets", {}),
                str(raw.get("updated_at") or ""),
                tuple((g["kind"], g["value"]) for g in raw.get("grants", [])),
            )
        )
        with self._lock:
            self._cache[client_id] = (now, found)
        return found


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _version(destination: Destination | None) -> int | None:
    """A destination's version as leases name it: its last change, microseconds since 1970."""
    if destination is None or not destination.version:
        return None
    changed = datetime.fromisoformat(destination.version)
    return (changed - _EPOCH) // timedelta(microseconds=1)


class Runner:
    def __init__(
        self, settings: LoaderSettings, warehouse: Warehouse, destinations: Destinations
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
        }
        self.stop = threading.Event()
        self.sessions = SessionPool(
            warehouse.close, cap=settings.max_connections, idle_s=settings.idle_connection_s
        )
        SESSIONS.labels(self.kind).set_function(lambda: self.sessions.open_count)
        self._slots = threading.BoundedSemaphore(settings.workers)
        # Checked again at every connect: the host's address may have changed since it was set.
        self.policy = netpolicy.from_settings(settings)
        self._s3 = s3_client(
            settings, Config(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=5)
        )
        self._threads: list[threading.Thread] = []

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
                    watch = _Watch(self.settings, lease, self._slots)
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

    def _lease(self, spool: SpoolClient, owner: str) -> Lease | None:
        return spool.lease(self.kind, owner, **self.limits)

    def _handle(
        self, lease: Lease, watch: _Watch, *, retry_stale: bool = True
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
            refusal = control.platform_refusal(
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

    def _open(self, destination: Destination) -> Any:
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
        session: Any,
        request_ids: dict[str, None],
    ) -> tuple[int, int]:
        ids = [b.batch_id for b in lease.batches]
        done = self.warehouse.already_loaded(session, destination, ids)
        todo = [b for b in lease.batches if b.batch_id not in done]
        if not todo:
            return 0, 0
        stream = self._events(todo, request_ids)
        return self.warehouse.load(session, destination, lease, [b.batch_id for b in todo], stream)

    def _events(
        self, batches: list[Any], request_ids: dict[str, None]
    ) -> Iterator[Header | Record]:
        """The batches' header and record events; notes each header's request id on the way."""
        for batch in batches:
            chunks = s3_chunks(self._s3, self.settings.s3_bucket, batch.object_key)
            for event in events(lines_of(chunks)):
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
        """Ack (and, with ``chain``, take the next lease in the same call) or nack; retry while
        the spool is briefly unreachable. A 409 means the lease is gone: the next leaser's
        exactly-once check covers a load that committed."""
        deadline = time.monotonic() + 60
        while True:
            try:
                if isinstance(outcome, Loaded):
                    report = outcome.report(lease, self.kind)
                    if chain:
                        return spool.ack_and_lease(
                            lease.lease_token, self.kind, owner, report=report, **self.limits
                        )
                    spool.ack(lease.lease_token, report=report)
                    return None
                spool.nack(lease.lease_token, outcome.kind, str(outcome))
                return None
            except SpoolConflict as exc:
                log.warning("lease lost before its ack/nack", extra={"err": str(exc)})
                return None
            except SpoolUnavailable:
                if time.monotonic() > deadline or self.stop.is_set():
                    raise
                time.sleep(1.0)


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


class _Watch:
    """One lease's clock while it loads: extends the lease every third of its length, gives the
    worker slot back once the load counts as stalled, and past ``max_load_s`` stops extending
    and cancels the load (``timed_out``)."""

    def __init__(
        self, settings: LoaderSettings, lease: Lease, slots: threading.BoundedSemaphore
    ) -> None:
        self._settings = settings
        self._lease = lease
        self._slots = slots
        self._started = time.monotonic()
        self.stalled = False
        self.timed_out = False

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
        extend_every = max(1.0, seconds / 3)
        next_extend = self._started + extend_every
        stall_at = (
            self._started + settings.stalled_load_s if settings.max_stalled_loads else math.inf
        )
        deadline = self._started + settings.max_load_s
        token = settings.spool_token.get_secret_value()
        # Opened at the first extension only: most loads end before one (and a client's TLS
        # context costs milliseconds of CPU that every lease would pay).
        spool: SpoolClient | None = None
        try:
            while True:
                now = time.monotonic()
                wake = min(next_extend, deadline, stall_at)
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
                if now >= next_extend:
                    next_extend = now + extend_every
                    if spool is None:
                        spool = SpoolClient(settings.spool_url, token)
                    try:
                        spool.extend(self._lease.lease_token, seconds)
                    except (SpoolConflict, SpoolUnavailable) as exc:
                        log.warning("lease extension failed", extra={"err": str(exc)})
        finally:
            if spool is not None:
                spool.close()
