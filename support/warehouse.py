"""The demo warehouse (the stack's Postgres on port 5433) and any other Postgres server a test
points a destination at: connections, roles, and rows read back as users see them."""

from __future__ import annotations

import uuid
from contextlib import closing
from typing import Any

import psycopg2
from psycopg2 import sql
from psycopg2.extensions import connection, make_dsn

DEMO_WAREHOUSE = {"host": "127.0.0.1", "port": "5433", "dbname": "warehouse", "user": "postgres"}


def warehouse(dsn: dict[str, str] | None = None) -> connection:
    """An autocommit connection to ``dsn`` (the demo warehouse by default), as its superuser."""
    conn = psycopg2.connect(make_dsn(**(dsn or DEMO_WAREHOUSE)), connect_timeout=5)
    conn.autocommit = True
    return conn


def warehouse_role(password: str) -> str:
    """A new login role of the demo warehouse with ``password`` (it may create schemas)."""
    role = f"t_{uuid.uuid4().hex[:12]}"
    with closing(warehouse()) as conn, conn.cursor() as cur:
        cur.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD %s").format(sql.Identifier(role)), (password,)
        )
        cur.execute(
            sql.SQL("GRANT CREATE ON DATABASE warehouse TO {}").format(sql.Identifier(role))
        )
    return role


def table_rows(
    schema: str, table: str, columns: list[str], dsn: dict[str, str] | None = None
) -> list[tuple[Any, ...]]:
    """Rows of ``schema.table`` ordered by the first column ([] while the table does not exist
    yet or the server is down)."""
    try:
        with closing(warehouse(dsn)) as conn, conn.cursor() as cur:
            cur.execute(
                sql.SQL("SELECT {} FROM {} ORDER BY 1").format(
                    sql.SQL(", ").join(sql.Identifier(c) for c in columns),
                    sql.Identifier(schema, table),
                )
            )
            return list(cur.fetchall())
    except (psycopg2.errors.UndefinedTable, psycopg2.errors.InvalidSchemaName):
        return []
    except psycopg2.OperationalError:
        return []


def schema_tables(schema: str) -> set[str]:
    """The tables of ``schema`` in the demo warehouse."""
    with closing(warehouse()) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (schema,)
        )
        return {row[0] for row in cur.fetchall()}
