"""The Iceberg warehouse as the lease loop sees it (``services.loaders.core.protocol.Warehouse``),
its sessions ``connection.Session`` (a pyiceberg catalog and the destination's target).

``already_loaded`` answers from what this process learnt: the batch ids it committed and the
ones it found in a table's snapshots. The snapshots are the record (a batch's ids are in the
summary of the snapshot that committed it), but the protocol names no table, and reading every
table of a namespace before each lease would cost a metadata read per table; so ``load``
reads the lease's own table first, returns without loading when every batch is there, and
fails as transient when only some are, having remembered those for the next lease to skip.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterator

from common.spool_client import Lease
from services.loaders.core.errors import LoadError
from services.loaders.core.protocol import Destination, Warehouse
from services.loaders.core.reader import Event, records
from services.loaders.iceberg import connection, errors, warehouse
from services.loaders.iceberg.connection import Session
from services.loaders.iceberg.destination import target_of

REMEMBERED = 100_000  # (where, batch id) pairs known committed, most recent kept
Where = tuple[int, str, str, str]  # client, catalog, warehouse, namespace


class IcebergWarehouse(Warehouse[Session]):
    type = "iceberg"

    def __init__(
        self,
        connect_timeout_s: int = 10,
        request_timeout_s: float = 300.0,
        commit_attempts: int = 5,
    ) -> None:
        self.connect_timeout_s = connect_timeout_s
        self.request_timeout_s = request_timeout_s
        self.commit_attempts = commit_attempts
        self._known: OrderedDict[tuple[Where, int], None] = OrderedDict()
        self._lock = threading.Lock()

    def open(self, destination: Destination) -> Session:
        target = target_of(destination.config, destination.secrets, destination.client_id)
        return connection.connect(
            target, dict(destination.pinned), self.connect_timeout_s, self.request_timeout_s
        )

    def close(self, session: Session) -> None:
        connection.close(session)

    def probe(self, session: Session, destination: Destination) -> str:
        """One round trip (``skein destinations test``): the catalog lists its namespaces."""
        found = session.catalog.list_namespaces()
        kind = "SQL" if session.target.catalog.__class__.__name__ == "SqlCatalog" else "REST"
        return f"{kind} catalog {session.target.catalog_name}: {len(found)} namespaces"

    def cancel(self, session: Session) -> None:
        """Nothing to interrupt: catalog calls and S3 requests have their own timeouts."""

    def already_loaded(
        self, session: Session, destination: Destination, ids: list[int]
    ) -> set[int]:
        where = _where(session, destination)
        with self._lock:
            return {i for i in ids if (where, i) in self._known}

    def _remember(self, where: Where, ids: set[int]) -> None:
        with self._lock:
            for batch_id in sorted(ids):
                self._known[(where, batch_id)] = None
                self._known.move_to_end((where, batch_id))
            while len(self._known) > REMEMBERED:
                self._known.popitem(last=False)

    def load(
        self,
        session: Session,
        destination: Destination,
        lease: Lease,
        batch_ids: list[int],
        stream: Iterator[Event],
    ) -> tuple[int, int]:
        work = warehouse.LeaseWork(
            destination.client_id, lease.table_name, batch_ids, lease.lease_token
        )
        found: set[int] = set()
        try:
            return warehouse.load_events(
                session, work, records(stream), self.commit_attempts, found
            )
        finally:
            if found:
                self._remember(_where(session, destination), found)

    def classify(self, exc: BaseException) -> LoadError:
        return errors.classify(exc)


def _where(session: Session, destination: Destination) -> Where:
    target = session.target
    return (destination.client_id, target.catalog_name, target.warehouse, target.namespace)


def probe_warehouse() -> IcebergWarehouse:
    """The warehouse as ``skein destinations test`` connects to it (default limits)."""
    return IcebergWarehouse()
