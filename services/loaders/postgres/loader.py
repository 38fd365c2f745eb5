"""The Postgres warehouse as the lease loop sees it (``services.loaders.core.runner.Warehouse``)."""

from __future__ import annotations

from collections.abc import Hashable, Iterator
from typing import Any

import psycopg2

from common.spool_client import Lease
from common.wire import Header
from services.loaders.core.errors import LoadError
from services.loaders.core.plan import LeaseLoad
from services.loaders.core.reader import Record
from services.loaders.core.runner import Destination
from services.loaders.postgres import connection, errors, statements, warehouse
from services.loaders.postgres.connection import SessionLimits


class PostgresWarehouse:
    type = "postgres"

    def __init__(self, limits: SessionLimits | None = None) -> None:
        self.limits = limits or SessionLimits()

    def open(self, destination: Destination) -> Any:
        return connection.connect(
            destination.config, destination.secrets, self.limits, dict(destination.pinned)
        )

    def close(self, session: Any) -> None:
        connection.close(session)

    def session_identity(self, destination: Destination) -> Hashable:
        """A Postgres session holds no state of the client that opened it (every setting is
        the loader's, staging tables drop at commit, the schema is named in each statement):
        destinations with the same server, user and password share idle sessions
        (``runner.SharesSessions``)."""
        return connection.identity(destination.config, destination.secrets)

    def probe(self, session: Any, destination: Destination) -> str:
        """One round trip (``skein destinations test``): the server's version."""
        with session.cursor() as cur:
            cur.execute("SELECT version()")
            version = str(cur.fetchone()[0])
        session.rollback()
        return version

    def cancel(self, session: Any) -> None:
        session.cancel()  # libpq's cancel request: the running statement fails QueryCanceled

    def already_loaded(self, session: Any, destination: Destination, ids: list[int]) -> set[int]:
        schema = warehouse.schema_of(destination.config, destination.client_id)
        return warehouse.already_loaded(session, schema, ids)

    def load(
        self,
        session: Any,
        destination: Destination,
        lease: Lease,
        batch_ids: list[int],
        stream: Iterator[Header | Record],
    ) -> tuple[int, int]:
        schema = warehouse.schema_of(destination.config, destination.client_id)
        work = LeaseLoad.of(lease, batch_ids, stream)
        try:
            return warehouse.load(session, schema, work)
        except psycopg2.errors.UniqueViolation as exc:
            if statements.LOADS in str(exc.diag.table_name or ""):
                return 0, 0  # another loader committed these batches first: nothing to do
            raise

    def classify(self, exc: BaseException) -> LoadError:
        return errors.classify(exc)


def probe_warehouse() -> PostgresWarehouse:
    """The warehouse as ``skein destinations test`` connects to it (default limits)."""
    return PostgresWarehouse()
