"""The Redshift warehouse as the lease loop sees it (``services.loaders.core.protocol.Warehouse``),
its sessions redshift-connector connections.

``redshift-connector`` is imported only in this folder (the ``redshift`` extra). Staged files
go to the destination's own S3 bucket (``s3_bucket``, ``s3_prefix``, ``s3_region``; ``iam_role`` or
``aws_access_key_id`` + the secret ``aws_secret_access_key`` for Redshift to read them).
"""

from __future__ import annotations

from collections.abc import Iterator

from redshift_connector.core import Connection

from common.spool_client import Lease
from services.loaders.core.errors import LoadError
from services.loaders.core.plan import LeaseLoad
from services.loaders.core.protocol import Destination, Warehouse
from services.loaders.core.reader import Event
from services.loaders.postgres.connection import SessionLimits
from services.loaders.redshift import connection, errors, warehouse
from services.loaders.redshift.staging import CopierFactory, S3Copier


class RedshiftWarehouse(Warehouse[Connection]):
    type = "redshift"

    def __init__(
        self,
        connect_timeout: int = 10,
        statement_timeout_s: float = 300.0,
        *,
        copier: CopierFactory = S3Copier,
    ) -> None:
        """``copier``: what gets a load's staged files into its staging tables (the tests' COPY
        stand-in for Postgres)."""
        self.limits = SessionLimits(
            connect_timeout_s=connect_timeout, statement_timeout_s=statement_timeout_s
        )
        self.copier = copier

    def open(self, destination: Destination) -> Connection:
        return connection.connect(
            destination.config, destination.secrets, self.limits, dict(destination.pinned)
        )

    def close(self, session: Connection) -> None:
        connection.close(session)

    def probe(self, session: Connection, destination: Destination) -> str:
        """One round trip (``skein destinations test``): the server's version."""
        cur = session.cursor()
        cur.execute("SELECT version()")
        row = cur.fetchone()
        assert row is not None  # SELECT returns its one row
        version = str(row[0])
        session.rollback()
        return version

    def cancel(self, session: Connection) -> None:
        # redshift-connector has no cancel request: closing the socket ends the statement.
        self.close(session)

    def already_loaded(
        self, session: Connection, destination: Destination, ids: list[int]
    ) -> set[int]:
        schema = warehouse.schema_of(destination.config, destination.client_id)
        warehouse.ensure_metadata(session, schema)
        return warehouse.loaded_batches(session, schema, ids)

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
        copier = self.copier(
            destination.config, destination.secrets, f"{destination.client_id}/{lease.lease_token}"
        )
        return warehouse.load(session, schema, work, copier)

    def classify(self, exc: BaseException) -> LoadError:
        return errors.classify(exc)


def probe_warehouse() -> RedshiftWarehouse:
    """The warehouse as ``skein destinations test`` connects to it (default limits)."""
    return RedshiftWarehouse()
