"""What the conformance suites share: ``ThroughProtocol``, which drives a loader only through
its ``Warehouse`` protocol (as the lease loop does), and for Postgres and Redshift a harness on
the demo-warehouse Postgres (127.0.0.1:5433), one schema a case, that reads the loaded tables
back with plain SQL and drops every schema of its run at the end."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Generic, Self

import psycopg2
from psycopg2 import sql

from common.spool_client import Lease, LeasedBatch
from services.loaders.core import native
from services.loaders.core.names import NameRules
from services.loaders.core.protocol import Destination, SessionT, Warehouse
from services.loaders.core.system_columns import ROW, SOURCE_KEY
from tests.conformance.cases import Case, Line
from tests.conformance.runner import to_events

WAREHOUSE_DSN = "postgresql://postgres@127.0.0.1:5433/warehouse"
# The demo warehouse as a destination's libpq settings (the password comes from PGPASSFILE).
WAREHOUSE_DSN_PARAMS = {
    "host": "127.0.0.1",
    "port": 5433,
    "dbname": "warehouse",
    "user": "postgres",
}
RECEIVED_AT = "2026-11-26T10:00:00.000000Z"


def lease_of(
    destination: Destination, table: str, batch_ids: list[int], lines: list[Line], token: str
) -> Lease:
    """A lease of these batches of ``table`` as the spool hands it to a loader; each batch
    holds the lines' records."""
    records = sum(1 for line in lines if "v" not in line)
    batches = tuple(
        LeasedBatch(batch_id, f"conformance/{batch_id}", 0, 0, 0, records, 0, RECEIVED_AT, 1)
        for batch_id in batch_ids
    )
    return Lease(token, destination.client_id, table, destination.type, RECEIVED_AT, batches)


class ThroughProtocol(Generic[SessionT]):
    """A loader driven only through its ``Warehouse`` protocol, the way the runner's lease loop
    drives it: sessions opened by the warehouse (one per destination), a session that failed
    closed and never used again, the batch ids the warehouse already holds skipped, and a
    failure raised as the warehouse classifies it (the verdict the loop would nack with)."""

    def __init__(self, warehouse: Warehouse[SessionT], text: bool | None = None) -> None:
        self.warehouse = warehouse
        self._sessions: dict[str, SessionT] = {}
        # How the runner reads batches for it (``Runner._text``), unless a test says.
        self.text = native.stages_text(warehouse) if text is None else text

    def _session(self, destination: Destination) -> SessionT:
        key = json.dumps([destination.config, destination.secrets], sort_keys=True)
        found = self._sessions.get(key)
        if found is None:
            found = self._sessions[key] = self.warehouse.open(destination)
        return found

    def _discard(self, destination: Destination) -> None:
        key = json.dumps([destination.config, destination.secrets], sort_keys=True)
        session = self._sessions.pop(key, None)
        if session is not None:
            self.warehouse.close(session)

    def already_loaded(self, destination: Destination, batch_ids: list[int]) -> set[int]:
        return self.warehouse.already_loaded(self._session(destination), destination, batch_ids)

    def load(
        self,
        destination: Destination,
        table: str,
        batch_ids: list[int],
        lines: list[Line],
        *,
        token: str = "token",
        skip_loaded: bool = True,
    ) -> tuple[int, int]:
        """Load these batches (their lines) of ``table``: (rows written, records rejected).
        ``skip_loaded=False`` hands every batch id to ``load`` even when the warehouse already
        holds it (a lease that raced another to the commit)."""
        session = self._session(destination)
        try:
            todo = batch_ids
            if skip_loaded:
                done = self.warehouse.already_loaded(session, destination, batch_ids)
                todo = [batch_id for batch_id in batch_ids if batch_id not in done]
                if not todo:
                    return 0, 0
            lease = lease_of(destination, table, todo, lines, token)
            events = to_events(lines, self.text)
            return self.warehouse.load(session, destination, lease, todo, events)
        except Exception as exc:
            self._discard(destination)
            failure = self.warehouse.classify(exc)
            if failure is exc:
                raise
            raise failure from exc

    def close(self) -> None:
        for session in self._sessions.values():
            self.warehouse.close(session)
        self._sessions.clear()


class SchemaHarness:
    """A ``Harness`` on the demo warehouse: it loads through the loader's ``Warehouse`` protocol
    alone (``driver``, one destination a schema) and reads back with plain SQL. A subclass names
    its warehouse, schema prefix, name rules and rejected-records table, and makes its loader
    and its destinations' settings."""

    warehouse: str
    prefix: str  # of every schema a run makes, so that the run's end can drop them all
    rules: NameRules
    rejected_table: str
    text: bool | None = None  # batches read as the runner reads them for this loader

    def __init__(self, conn: Any) -> None:
        self.conn = conn  # for reading back only
        self.run = uuid.uuid4().hex[:6]
        self.driver = ThroughProtocol(self.loader(), self.text)

    def loader(self) -> Warehouse[Any]:
        raise NotImplementedError

    def destination(self, schema: str) -> Destination:
        raise NotImplementedError

    def load(self, case: Case, batch_id: int, lines: list[Line]) -> None:
        self.driver.load(self.destination(self.schema(case)), case.table, [batch_id], lines)

    @classmethod
    @contextmanager
    def connected(cls) -> Iterator[Self]:
        """A harness on its own connection; afterwards, every schema of its run is dropped."""
        conn = psycopg2.connect(WAREHOUSE_DSN)
        harness = cls(conn)
        try:
            yield harness
        finally:
            harness.driver.close()
        conn.rollback()  # a failed read may leave the transaction aborted
        with conn, conn.cursor() as cur:
            cur.execute(
                "SELECT nspname FROM pg_namespace WHERE nspname LIKE %s",
                (f"{harness.prefix}_{harness.run}_%",),
            )
            for (schema,) in cur.fetchall():
                cur.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
        conn.close()

    def schema(self, case: Case) -> str:
        return f"{self.prefix}_{self.run}_{case.name}"[:63]

    def column(self, name: str) -> str:
        # System columns and a scalar array's "value" are named by the loader, not by the rules.
        if name.startswith(("_sdc", SOURCE_KEY)) or name == "value" or name == ROW:
            return name
        return self.rules.column(name)

    def rows(self, case: Case, table: str, columns: list[str]) -> list[dict[str, Any]]:
        query = sql.SQL("SELECT {} FROM {}").format(
            sql.SQL(", ").join(sql.Identifier(self.column(c)) for c in columns),
            sql.Identifier(self.schema(case), self.rules.table(table)),
        )
        with self.conn, self.conn.cursor() as cur:
            cur.execute(query)
            return [dict(zip(columns, r, strict=True)) for r in cur.fetchall()]

    def rejected(self, case: Case) -> int:
        with self.conn, self.conn.cursor() as cur:
            cur.execute(
                sql.SQL("SELECT count(*) FROM {}").format(
                    sql.Identifier(self.schema(case), self.rejected_table)
                )
            )
            row = cur.fetchone()
        return int(row[0]) if row else 0
