"""The Snowflake warehouse as the lease loop sees it (``services.loaders.core.protocol.Warehouse``),
its sessions the connector's connections.

``snowflake-connector-python`` is imported only in this folder and in the tests (the
``snowflake`` extra).
"""

from __future__ import annotations

from collections.abc import Iterator

from snowflake.connector import SnowflakeConnection

from common.spool_client import Lease
from services.loaders.core.errors import LoadError
from services.loaders.core.plan import LeaseLoad
from services.loaders.core.protocol import Destination, Warehouse
from services.loaders.core.reader import Event
from services.loaders.snowflake import connection, errors, warehouse


class SnowflakeWarehouse(Warehouse[SnowflakeConnection]):
    type = "snowflake"

    def __init__(self, connect_timeout: int = 10, statement_timeout_s: float = 300.0) -> None:
        self.connect_timeout = connect_timeout
        self.statement_timeout_s = statement_timeout_s
        # (session, schema) pairs whose schema, stage and bookkeeping tables exist: each DDL
        # statement is a round trip to Snowflake, not worth repeating for every lease.
        self._ready: set[tuple[int, str]] = set()

    def open(self, destination: Destination) -> SnowflakeConnection:
        return connection.connect(
            destination.config,
            destination.secrets,
            self.connect_timeout,
            self.statement_timeout_s,
        )

    def close(self, session: SnowflakeConnection) -> None:
        self._ready = {r for r in self._ready if r[0] != id(session)}
        connection.close(session)

    def probe(self, session: SnowflakeConnection, destination: Destination) -> str:
        """One round trip (``skein destinations test``): the account's Snowflake version."""
        cur = session.cursor()
        cur.execute("SELECT CURRENT_VERSION()")
        row = cur.fetchone()
        assert row is not None  # SELECT returns its one row
        return str(row[0])

    def cancel(self, session: SnowflakeConnection) -> None:
        self.close(session)  # the connector's statements end with their connection

    def already_loaded(
        self, session: SnowflakeConnection, destination: Destination, ids: list[int]
    ) -> set[int]:
        schema = warehouse.schema_of(destination.config, destination.client_id)
        cur = session.cursor()
        if (id(session), schema) not in self._ready:
            warehouse.ensure_metadata(cur, schema)
            self._ready.add((id(session), schema))
        return warehouse.loaded_batches(cur, schema, ids)

    def load(
        self,
        session: SnowflakeConnection,
        destination: Destination,
        lease: Lease,
        batch_ids: list[int],
        stream: Iterator[Event],
    ) -> tuple[int, int]:
        schema = warehouse.schema_of(destination.config, destination.client_id)
        work = LeaseLoad.of(lease, batch_ids, stream)
        try:
            return warehouse.load(session, schema, work)
        except Exception:
            self._ready.discard((id(session), schema))  # e.g. the schema was dropped meanwhile
            raise

    def classify(self, exc: BaseException) -> LoadError:
        return errors.classify(exc)


def probe_warehouse() -> SnowflakeWarehouse:
    """The warehouse as ``skein destinations test`` connects to it (default limits)."""
    return SnowflakeWarehouse()
