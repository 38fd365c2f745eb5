"""Clients of the local stack for the multi-tenant tests and benchmarks: each gets a token and
its own schema on a Postgres warehouse, records go in through the gate, rows are read back."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from contextlib import closing
from dataclasses import dataclass
from typing import Any

import httpx
import psycopg2
from psycopg2 import sql

from common import control, db
from common.settings import SharedSettings
from services.control import accounts, destinations
from services.spool import queue
from tests.conftest import demo_warehouse_secrets

GATE = "http://127.0.0.1:8080"
DEMO_WAREHOUSE = {"host": "127.0.0.1", "port": "5433", "dbname": "warehouse", "user": "postgres"}


@dataclass(frozen=True)
class Tenant:
    client_id: int
    token: str
    schema: str
    dsn: dict[str, str]

    def connect(self) -> Any:
        return psycopg2.connect(connect_timeout=3, **self.dsn)


def new_tenants(count: int, dsn: dict[str, str] | None = None, prefix: str = "mt") -> list[Tenant]:
    """``count`` clients, each with an API token and a Postgres destination of its own schema."""
    dsn = dict(dsn or DEMO_WAREHOUSE)
    key = SharedSettings().secret_key.get_secret_value()
    made = []
    with closing(db.connect()) as conn:
        for _ in range(count):
            client = accounts.create_client(conn, prefix)
            token = control.create_api_token(conn, client["client_id"])
            schema = f"{prefix}_{uuid.uuid4().hex[:10]}"
            destinations.set_destination(
                conn,
                key,
                client["client_id"],
                "postgres",
                {"dsn_params": dsn, "schema": schema},
                demo_warehouse_secrets(dsn),
            )
            made.append(Tenant(client["client_id"], token["token"], schema, dsn))
    return made


def body(table: str, records: Iterable[dict[str, Any]], first_seq: int = 1) -> dict[str, Any]:
    return {
        "table_name": table,
        "schema": {"properties": {"id": {"type": "integer"}}},
        "key_names": ["id"],
        "messages": [
            {"action": "upsert", "sequence": first_seq + i, "data": r}
            for i, r in enumerate(records)
        ],
    }


def push(
    http: httpx.Client,
    tenant: Tenant,
    table: str,
    records: Iterable[dict[str, Any]],
    first_seq: int = 1,
) -> None:
    """Post until accepted (a 503 is retried, as clients do); fail on anything else."""
    payload = body(table, records, first_seq)
    deadline = time.monotonic() + 60
    while True:
        r = http.post(
            f"{GATE}/v2/import/batch",
            json=payload,
            headers={"Authorization": f"Bearer {tenant.token}"},
            timeout=30,
        )
        if r.status_code == 202:
            return
        assert r.status_code == 503 and time.monotonic() < deadline, r.text


def count_rows(tenant: Tenant, table: str) -> int:
    try:
        with closing(tenant.connect()) as conn, conn.cursor() as cur:
            cur.execute(
                sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(tenant.schema, table))
            )
            return int(cur.fetchone()[0])  # type: ignore[index]
    except (psycopg2.errors.UndefinedTable, psycopg2.OperationalError):
        return 0


def batches_of(client_ids: list[int]) -> list[dict[str, Any]]:
    with closing(db.connect()) as conn:
        found: list[dict[str, Any]] = []
        for client_id in client_ids:
            found.extend(queue.list_batches(conn, client_id=client_id, limit=10_000))
        return found


def drop_schemas(tenants: Iterable[Tenant]) -> None:
    by_server: dict[tuple[str, str], list[Tenant]] = {}
    for t in tenants:
        by_server.setdefault((t.dsn["host"], t.dsn["port"]), []).append(t)
    for group in by_server.values():
        with closing(group[0].connect()) as conn, conn, conn.cursor() as cur:
            for t in group:
                cur.execute(
                    sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(t.schema))
                )
