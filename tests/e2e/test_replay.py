"""Replay on the local stack: a table dropped by mistake is loaded again from the retained
batch objects, a second replay adds no duplicates, and a replay into a new destination fills
it with the same rows."""

from __future__ import annotations

import subprocess
import time
import uuid
from contextlib import closing
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import psycopg2
import pytest
from psycopg2 import sql

from common import db
from support.cli import SKEIN, ok
from support.stack import wait_for
from support.tenants import new_tenant, set_postgres_destination
from support.warehouse import DEMO_WAREHOUSE

pytestmark = pytest.mark.e2e

GATE = "http://127.0.0.1:8080"


def set_schema(client_id: int, schema: str) -> None:
    with closing(db.connect()) as conn:
        set_postgres_destination(conn, client_id, DEMO_WAREHOUSE, schema)


def push(token: str, table: str, records: list[dict[str, Any]], first: int, keyed: bool) -> None:
    body: dict[str, Any] = {
        "table_name": table,
        "schema": {"properties": {"id": {"type": "integer"}, "v": {"type": "string"}}},
        "messages": [
            {"action": "upsert", "sequence": first + i, "data": r} for i, r in enumerate(records)
        ],
    }
    if keyed:
        body["key_names"] = ["id"]
    r = httpx.post(
        f"{GATE}/v2/import/batch",
        json=body,
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    assert r.status_code == 202, r.text


def rows(schema: str, table: str) -> list[tuple[Any, ...]] | None:
    """The table's rows as users see them (no load-time column), or None if it is missing."""
    with closing(psycopg2.connect(**DEMO_WAREHOUSE)) as conn, conn.cursor() as cur:
        cur.execute("SELECT to_regclass(%s)", (f'"{schema}"."{table}"',))
        if cur.fetchone() == (None,):
            return None
        cur.execute(
            sql.SQL("SELECT id, v, _sdc_sequence FROM {} ORDER BY id, v, _sdc_sequence").format(
                sql.Identifier(schema, table)
            )
        )
        return cur.fetchall()


def replays_waiting(client_id: int) -> int:
    with closing(db.connect()) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT count(*) FROM batches WHERE client_id = %s AND replay_of IS NOT NULL"
            " AND state <> 'loaded'",
            (client_id,),
        )
        return int(cur.fetchone()[0])  # type: ignore[index]


def batch_count(client_id: int) -> int:
    with closing(db.connect()) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM batches WHERE client_id = %s", (client_id,))
        return int(cur.fetchone()[0])  # type: ignore[index]


def test_replay_restores_a_dropped_table_adds_no_duplicates_and_fills_a_new_destination() -> None:
    schema = f"e2e_replay_{uuid.uuid4().hex[:8]}"
    tenant = new_tenant("e2e-replay", DEMO_WAREHOUSE, schema=schema)
    client_id, token = tenant.client_id, tenant.token
    since = (datetime.now(UTC) - timedelta(seconds=5)).isoformat()

    push(token, "orders", [{"id": i, "v": f"first-{i}"} for i in range(1, 31)], 1, keyed=True)
    push(token, "orders", [{"id": i, "v": f"second-{i}"} for i in range(1, 11)], 100, keyed=True)
    push(token, "events", [{"id": i % 7, "v": f"e{i}"} for i in range(20)], 1, keyed=False)
    wait_for(
        lambda: len(rows(schema, "orders") or []) == 30 and len(rows(schema, "events") or []) == 20,
        timeout=60,
        what="the first load",
    )
    time.sleep(1.0)  # the last batches' acks
    orders, events = rows(schema, "orders"), rows(schema, "events")
    assert orders is not None and ("second-1" in {v for _, v, _ in orders})

    # By mistake: the table is dropped in the warehouse.
    with closing(psycopg2.connect(**DEMO_WAREHOUSE)) as conn, conn, conn.cursor() as cur:
        cur.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(schema, "orders")))

    before = batch_count(client_id)
    dry = ok("replay", str(client_id), "--table", "orders", "--since", since, "--dry-run")
    (planned,) = dry["would_enqueue"]
    assert planned["table_name"] == "orders" and planned["records"] == 40 and dry["gone"] == []
    assert batch_count(client_id) == before  # a dry run changes nothing

    done = ok("replay", str(client_id), "--table", "orders", "--since", since)
    assert [t["table_name"] for t in done["enqueued"]] == ["orders"]
    wait_for(lambda: rows(schema, "orders") == orders, timeout=60, what="orders restored")

    # Everything again: the rows converge, nothing is duplicated (events has no key).
    ok("replay", str(client_id), "--since", since)
    wait_for(lambda: replays_waiting(client_id) == 0, timeout=60, what="the replays loaded")
    assert rows(schema, "orders") == orders
    assert rows(schema, "events") == events

    # A new destination: a replay fills it with the same rows.
    fresh = f"{schema}_new"
    set_schema(client_id, fresh)
    ok("replay", str(client_id), "--since", since)
    wait_for(lambda: replays_waiting(client_id) == 0, timeout=60, what="the replays loaded")
    assert rows(fresh, "orders") == orders
    assert rows(fresh, "events") == events

    with closing(psycopg2.connect(**DEMO_WAREHOUSE)) as conn, conn, conn.cursor() as cur:
        for name in (schema, fresh):
            cur.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(name)))


def test_replay_refuses_a_bad_window_and_an_unknown_client() -> None:
    for args in (
        ["replay", "999999999", "--since", "2026-01-01T00:00:00"],
        ["replay", "1", "--since", "yesterday"],
        ["replay", "1", "--since", "2026-02-01", "--until", "2026-01-01"],
    ):
        done = subprocess.run(
            [str(SKEIN), *args], capture_output=True, text=True, timeout=60, check=False
        )
        assert done.returncode != 0
        assert "error" in orjson.loads(done.stdout.splitlines()[-1])
