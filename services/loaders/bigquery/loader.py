"""The BigQuery warehouse as the lease loop sees it (``services.loaders.core.protocol.Warehouse``),
its sessions ``connection.Session`` (a client and the destination's target)."""

from __future__ import annotations

from collections.abc import Iterator

from common.spool_client import Lease
from services.loaders.bigquery import connection, errors, warehouse
from services.loaders.bigquery.connection import Session
from services.loaders.bigquery.destination import target_of
from services.loaders.core.errors import LoadError
from services.loaders.core.protocol import Destination, Warehouse
from services.loaders.core.reader import Event, records


class BigQueryWarehouse(Warehouse[Session]):
    type = "bigquery"

    def __init__(self, request_timeout: float = 30.0, job_timeout: float = 600.0) -> None:
        self.request_timeout = request_timeout
        self.job_timeout = job_timeout

    def open(self, destination: Destination) -> Session:
        target = target_of(destination.config, destination.secrets, destination.client_id)
        return connection.connect(target, self.request_timeout, self.job_timeout)

    def close(self, session: Session) -> None:
        connection.close(session)

    def probe(self, session: Session, destination: Destination) -> str:
        """One round trip (``skein destinations test``): a query job in the project."""
        rows = list(session.client.query("SELECT 1 AS ok").result(timeout=self.job_timeout))
        return f"project {session.client.project}: query ok ({len(rows)} row)"

    def cancel(self, session: Session) -> None:
        """Nothing to interrupt: every API call and job wait has its own timeout."""

    def already_loaded(
        self, session: Session, destination: Destination, ids: list[int]
    ) -> set[int]:
        warehouse.ensure_metadata(session)
        return warehouse.loaded_batches(session, ids)

    def load(
        self,
        session: Session,
        destination: Destination,
        lease: Lease,
        batch_ids: list[int],
        stream: Iterator[Event],
    ) -> tuple[int, int]:
        work = warehouse.LeaseWork(
            destination.client_id,
            lease.table_name,
            batch_ids,
            lease.record_counts(batch_ids),
            lease.lease_token,
        )
        return warehouse.load_events(session, work, records(stream))

    def classify(self, exc: BaseException) -> LoadError:
        return errors.classify(exc)


def probe_warehouse() -> BigQueryWarehouse:
    """The warehouse as ``skein destinations test`` connects to it (default limits)."""
    return BigQueryWarehouse()
