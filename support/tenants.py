"""Clients of the local stack: each gets an API token and, when asked, a Postgres destination of
its own schema; records go in through the gate as a client sends them, and what it sees comes
back: its rows in the warehouse and its batches in the spool."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import psycopg2
from psycopg2 import sql
from psycopg2.extensions import connection, make_dsn

from common import db, tokens
from common.settings import SharedSettings
from services.control import accounts, destinations
from services.spool import operations
from support.stack import GATE, demo_warehouse_secrets
from support.warehouse import DEMO_WAREHOUSE, table_rows, warehouse, warehouse_role


@dataclass(frozen=True)
class Tenant:
    """A client: its token and, if it has a destination, the schema (BigQuery: the dataset) its
    rows land in; for Postgres, on the server ``dsn`` names (read back as its superuser)."""

    client_id: int
    token: str
    schema: str = ""  # none without a destination
    dsn: dict[str, str] = field(default_factory=lambda: dict(DEMO_WAREHOUSE), hash=False)

    def headers(self, **extra: str) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {self.token}",
            "Content-Type": "application/json",
            **extra,
        }

    def connect(self) -> connection:
        return psycopg2.connect(make_dsn(**self.dsn), connect_timeout=3)


def new_tenant(
    name: str, dsn: dict[str, str] | None = None, *, password: str | None = None, schema: str = ""
) -> Tenant:
    """A client with an API token; given ``dsn``, a destination of its own schema there (as a
    new demo-warehouse role with ``password``, stored as its encrypted secret, when one is
    given; as the server's superuser otherwise)."""
    with closing(db.connect()) as conn:
        return _create(conn, name, dsn, password=password, schema=schema)


def new_tenants(count: int, dsn: dict[str, str] | None = None, prefix: str = "mt") -> list[Tenant]:
    """``count`` clients, each with an API token and a destination of its own schema on ``dsn``
    (the demo warehouse by default)."""
    with closing(db.connect()) as conn:
        return [_create(conn, prefix, dsn or DEMO_WAREHOUSE) for _ in range(count)]


def _create(
    conn: connection,
    name: str,
    dsn: dict[str, str] | None,
    *,
    password: str | None = None,
    schema: str = "",
) -> Tenant:
    client_id = int(accounts.create_client(conn, f"{name}-{uuid.uuid4().hex[:6]}")["client_id"])
    token = str(tokens.create_api_token(conn, client_id)["token"])
    if dsn is None:
        return Tenant(client_id, token)
    schema = schema or f"{name}_{uuid.uuid4().hex[:10]}"
    set_postgres_destination(conn, client_id, dsn, schema, password=password)
    return Tenant(client_id, token, schema, dict(dsn))


def set_postgres_destination(
    conn: connection,
    client_id: int,
    dsn: dict[str, str],
    schema: str,
    *,
    password: str | None = None,
) -> None:
    """Point the client's destination at ``schema`` on the Postgres server ``dsn``: as a new
    demo-warehouse role with ``password`` (stored as its encrypted secret) when one is given, as
    the server's superuser otherwise."""
    destinations.set_destination(
        conn,
        SharedSettings().secret_key.get_secret_value(),
        client_id,
        "postgres",
        {
            "dsn_params": {**dsn, "user": warehouse_role(password)} if password else dict(dsn),
            "schema": schema,
        },
        {"password": password} if password else demo_warehouse_secrets(dsn),
    )


def batch_body(table: str, records: Iterable[dict[str, Any]], first_seq: int = 1) -> dict[str, Any]:
    """An Import API batch of upserts keyed on ``id``, sequences from ``first_seq`` on."""
    return {
        "table_name": table,
        "schema": {"properties": {"id": {"type": "integer"}}},
        "key_names": ["id"],
        "messages": [
            {"action": "upsert", "sequence": first_seq + i, "data": r}
            for i, r in enumerate(records)
        ],
    }


@contextmanager
def _client(http: httpx.Client | None) -> Iterator[httpx.Client]:
    if http is not None:
        yield http
    else:
        with httpx.Client() as own:
            yield own


def push(
    tenant: Tenant,
    table: str,
    records: Iterable[dict[str, Any]],
    first_seq: int = 1,
    *,
    http: httpx.Client | None = None,
) -> None:
    """Post ``records`` as one batch until accepted (a 503 is retried, as clients do); fail on
    anything else."""
    payload = batch_body(table, records, first_seq)
    deadline = time.monotonic() + 60
    with _client(http) as client:
        while True:
            r = client.post(
                f"{GATE}/v2/import/batch",
                json=payload,
                headers={"Authorization": f"Bearer {tenant.token}"},
                timeout=30,
            )
            if r.status_code == 202:
                return
            assert r.status_code == 503 and time.monotonic() < deadline, r.text


def rows(tenant: Tenant, table: str, columns: str = "id") -> list[tuple[Any, ...]]:
    """The tenant's rows of ``table``, ``columns`` (comma-separated) ordered by the first."""
    assert tenant.schema, "the tenant has no destination"
    return table_rows(tenant.schema, table, columns.split(","), tenant.dsn)


def count_rows(tenant: Tenant, table: str) -> int:
    """How many rows the tenant's ``table`` holds (0 while it does not exist)."""
    assert tenant.schema, "the tenant has no destination"
    query = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(tenant.schema, table))
    try:
        with closing(warehouse(tenant.dsn)) as conn, conn.cursor() as cur:
            cur.execute(query)
            found = cur.fetchone()
            return int(found[0]) if found else 0
    except (psycopg2.errors.UndefinedTable, psycopg2.OperationalError):
        return 0


def batches(client_id: int) -> list[dict[str, Any]]:
    """The client's batches as the spool lists them."""
    return batches_of([client_id])


def batches_of(client_ids: Iterable[int]) -> list[dict[str, Any]]:
    """The batches of every client in ``client_ids``."""
    with closing(db.connect()) as conn:
        found: list[dict[str, Any]] = []
        for client_id in client_ids:
            found.extend(operations.list_batches(conn, client_id=client_id, limit=10_000))
        return found


def drop_schemas(tenants: Iterable[Tenant]) -> None:
    """Drop each tenant's schema (and its tables) on its server."""
    by_server: dict[tuple[str, str], list[Tenant]] = {}
    for t in tenants:
        if t.schema:
            by_server.setdefault((t.dsn["host"], t.dsn["port"]), []).append(t)
    for group in by_server.values():
        with closing(warehouse(group[0].dsn)) as conn, conn.cursor() as cur:
            for t in group:
                cur.execute(
                    sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(t.schema))
                )
