"""The Postgres warehouse as the lease loop sees it (``services.loaders.core.protocol.Warehouse``),
its sessions psycopg2 connections."""

from __future__ import annotations

from collections.abc import Hashable, Iterator

import psycopg2

from common.spool_client import Lease
from services.loaders.core.errors import LoadError
from services.loaders.core.plan import LeaseLoad
from services.loaders.core.protocol import Destination, Warehouse
from services.loaders.core.reader import Event
from services.loaders.postgres import connection, errors, statements, warehouse
from services.loaders.postgres.chunks import CHUNK_ROWS
from services.loaders.postgres.connection import Connection, SessionLimits


class PostgresWarehouse(Warehouse[Connection]):
    type = "postgres"
    # Its plans run natively: the runner hands batch objects' record lines over unread.
    stages_text = True

    def __init__(
        self,
        limits: SessionLimits | None = None,
        *,
        chunk_rows: int = CHUNK_ROWS,
        straight_in: bool = True,
    ) -> None:
        """``chunk_rows`` and ``straight_in``: how a lease is merged (``warehouse.load``); the
        defaults are the loader's, others are for tests (small chunks, merge only)."""
        self.limits = limits or SessionLimits()
        self.chunk_rows = chunk_rows
        self.straight_in = straight_in

    def open(self, destination: Destination) -> Connection:
        return connection.connect(
            destination.config, destination.secrets, self.limits, dict(destination.pinned)
        )

    def close(self, session: Connection) -> None:
        connection.close(session)

    def session_identity(self, destination: Destination) -> Hashable:
        """A Postgres session holds no state of the client that opened it (every setting is
        the loader's, staging tables drop at commit, the schema is named in each statement):
        destinations with the same server, user and password share idle sessions
        (``runner.SharesSessions``)."""
        return connection.identity(destination.config, destination.secrets)

    def probe(self, session: Connection, destination: Destination) -> str:
        """One round trip (``skein destinations test``): the server's version."""
        with session.cursor() as cur:
            cur.execute("SELECT version()")
            row = cur.fetchone()
            assert row is not None  # SELECT returns its one row
            version = str(row[0])
        session.rollback()
        return version

    def cancel(self, session: Connection) -> None:
        session.cancel()  # libpq's cancel request: the running statement fails QueryCanceled

    def already_loaded(
        self, session: Connection, destination: Destination, ids: list[int]
    ) -> set[int]:
        schema = warehouse.schema_of(destination.config, destination.client_id)
        return warehouse.already_loaded(session, schema, ids)

    def load(
        self,
        session: Connection,
        destination: Destination,
        lease: Lease,
        batch_ids: list[int],
        stream: Iterator[Event],
    ) -> tuple[int, int]:
        schema = warehouse.schema_of(destination.config, destination.client_id)
        work = LeaseLoad.of(lease, batch_ids, stream)
        try:
            return warehouse.load(
                session,
                schema,
                work,
                chunk_rows=self.chunk_rows,
                straight_in=self.straight_in,
            )
        except psycopg2.errors.UniqueViolation as exc:
            if statements.LOADS in str(exc.diag.table_name or ""):
                return 0, 0  # another loader committed these batches first: nothing to do
            raise

    def classify(self, exc: BaseException) -> LoadError:
        return errors.classify(exc)


def probe_warehouse() -> PostgresWarehouse:
    """The warehouse as ``skein destinations test`` connects to it (default limits)."""
    return PostgresWarehouse()
