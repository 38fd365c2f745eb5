"""The lease loop every loader runs: lease a table's batches from the spool, load them into the
client's warehouse exactly once, acknowledge; on failure, nack with the warehouse's verdict.

Worker threads each run the loop, so one slow or unreachable warehouse occupies one worker for
one attempt at a time while the spool's back-off keeps it out of the way of other clients.
Long loads keep their lease alive with a background extension.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from botocore.config import Config
from prometheus_client import Counter, Histogram

from common import control, db
from common.metrics import client_label
from common.s3 import client as s3_client
from common.settings import SharedSettings
from common.spool_client import Lease, SpoolClient, SpoolConflict, SpoolUnavailable
from common.wire import Header
from services.loaders.core import faults
from services.loaders.core.errors import LoadError, PermanentError, TransientError
from services.loaders.core.reader import Record, events, lines_of, s3_chunks
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
    "skein_loader_rejected_records_total", "Records sent to _sdc_rejected", ["destination_type"]
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


@dataclass(frozen=True)
class Destination:
    client_id: int
    type: str
    config: dict[str, Any]
    secrets: dict[str, str]


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


class Destinations:
    """Clients' destinations from the control DB, cached briefly."""

    def __init__(self, dsn: str, secret_key: str, ttl: float) -> None:
        self._dsn = dsn
        self._secret_key = secret_key
        self._ttl = ttl
        self._cache: dict[int, tuple[float, Destination | None]] = {}
        self._lock = threading.Lock()

    def get(self, client_id: int) -> Destination | None:
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(client_id)
        if hit and now - hit[0] < self._ttl:
            return hit[1]
        try:
            with closing(db.connect(self._dsn)) as conn:
                raw = control.get_destination(conn, self._secret_key, client_id, reveal=True)
        except Exception as exc:
            raise TransientError(f"control database unavailable: {exc}") from exc
        found = (
            None
            if raw is None
            else Destination(client_id, raw["type"], raw["config"], raw.get("secrets", {}))
        )
        with self._lock:
            self._cache[client_id] = (now, found)
        return found


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
        self._s3 = s3_client(
            settings, Config(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=5)
        )
        self._threads: list[threading.Thread] = []

    # -- lifecycle
    def start(self) -> None:
        for n in range(self.settings.workers):
            thread = threading.Thread(target=self._work, args=(n,), name=f"loader-{n}")
            thread.start()
            self._threads.append(thread)

    def join(self, timeout: float | None = None) -> None:
        for thread in self._threads:
            thread.join(timeout)

    # -- the loop
    def _work(self, n: int) -> None:
        owner = f"{self.owner}/{n}"
        sessions: dict[int, Any] = {}
        with SpoolClient(
            self.settings.spool_url, self.settings.spool_token.get_secret_value()
        ) as spool:
            lease: Lease | None = None
            while not self.stop.is_set():
                try:
                    if lease is None:
                        lease = self._lease(spool, owner)
                        if lease is None:
                            self.stop.wait(self.settings.poll_interval_s)
                            continue
                    loaded = self._handle(lease, sessions)
                    if loaded is None:
                        faults.hit("after_commit")
                    lease = self._finish(spool, owner, lease, loaded)
                except SpoolUnavailable as exc:
                    log.warning("spool unavailable", extra={"err": str(exc)})
                    lease = None
                    self.stop.wait(2.0)
            for session in sessions.values():
                self.warehouse.close(session)

    def _lease(self, spool: SpoolClient, owner: str) -> Lease | None:
        return spool.lease(self.kind, owner, **self.limits)

    def _handle(
        self, lease: Lease, sessions: dict[int, Any], *, retry_stale: bool = True
    ) -> LoadError | None:
        """Load the lease; None on success, else the classified failure."""
        started = time.monotonic()
        reused = lease.client_id in sessions
        request_ids: dict[str, None] = {}  # in load order, for the log line (tracing)
        try:
            destination = self.destinations.get(lease.client_id)
            if destination is None or destination.type != self.kind:
                raise PermanentError(
                    f"client {lease.client_id} has no {self.kind} destination any more"
                )
            with _Extender(self.settings, lease, self.settings.lease_seconds):
                rows, rejected = self._load(destination, lease, sessions, request_ids)
        except Exception as exc:
            failure = self.warehouse.classify(exc)
            if isinstance(failure, TransientError):
                session = sessions.pop(lease.client_id, None)
                if session is not None:
                    self.warehouse.close(session)
                if reused and retry_stale:
                    # A cached connection dies with a warehouse restart and fails its next use:
                    # try once on a new one before the lease pays a back-off round for it.
                    log.info(
                        "retrying on a new warehouse connection",
                        extra={"client_id": lease.client_id, "err": str(failure)},
                    )
                    return self._handle(lease, sessions, retry_stale=False)
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
        REJECTED.labels(self.kind).inc(rejected)
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
        return None

    def _load(
        self,
        destination: Destination,
        lease: Lease,
        sessions: dict[int, Any],
        request_ids: dict[str, None],
    ) -> tuple[int, int]:
        session = sessions.get(lease.client_id)
        if session is None:
            session = sessions[lease.client_id] = self.warehouse.open(destination)
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
        self, spool: SpoolClient, owner: str, lease: Lease, failure: LoadError | None
    ) -> Lease | None:
        """Ack (and take the next lease in the same call) or nack; retry while the spool is
        briefly unreachable. A 409 means the lease is gone: the next leaser's exactly-once
        check covers a load that committed."""
        deadline = time.monotonic() + 60
        while True:
            try:
                if failure is None:
                    return spool.ack_and_lease(lease.lease_token, self.kind, owner, **self.limits)
                spool.nack(lease.lease_token, failure.kind, str(failure))
                return None
            except SpoolConflict as exc:
                log.warning("lease lost before its ack/nack", extra={"err": str(exc)})
                return None
            except SpoolUnavailable:
                if time.monotonic() > deadline or self.stop.is_set():
                    raise
                time.sleep(1.0)


class _Extender:
    """Extends a lease every third of its length while a load runs."""

    def __init__(self, shared: SharedSettings, lease: Lease, seconds: int) -> None:
        self._shared = shared
        self._lease = lease
        self._seconds = seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="lease-extender")

    def __enter__(self) -> _Extender:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        token = self._shared.spool_token.get_secret_value()
        with SpoolClient(self._shared.spool_url, token) as spool:
            while not self._stop.wait(max(1.0, self._seconds / 3)):
                try:
                    spool.extend(self._lease.lease_token, self._seconds)
                except (SpoolConflict, SpoolUnavailable) as exc:
                    log.warning("lease extension failed", extra={"err": str(exc)})
