"""What the Postgres and Redshift conformance suites share: a harness on the demo-warehouse
Postgres (127.0.0.1:5433), one schema a case, that reads the loaded tables back with plain SQL
and drops every schema of its run at the end."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Self

import psycopg2
from psycopg2 import sql

from services.loaders.core.names import NameRules
from services.loaders.core.plan import ROW, SOURCE_KEY
from tests.conformance.cases import Case

WAREHOUSE_DSN = "postgresql://postgres@127.0.0.1:5433/warehouse"


class SchemaHarness:
    """The reading side of a ``Harness``; a subclass loads (``load``) the way its loader does
    and names its warehouse, schema prefix, name rules and rejected-records table."""

    warehouse: str
    prefix: str  # of every schema a run makes, so that the run's end can drop them all
    rules: NameRules
    rejected_table: str

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.run = uuid.uuid4().hex[:6]

    @classmethod
    @contextmanager
    def connected(cls) -> Iterator[Self]:
        """A harness on its own connection; afterwards, every schema of its run is dropped."""
        conn = psycopg2.connect(WAREHOUSE_DSN)
        harness = cls(conn)
        yield harness
        conn.rollback()  # a failed load may leave the transaction aborted
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
