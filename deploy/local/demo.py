"""Show data flowing through the running local stack: a demo client pushes a batch to the gate
and the records come out as rows of the demo warehouse (Postgres 127.0.0.1:5433, schema
``demo``). Run by `make up` (stack.sh) after the services start."""

from __future__ import annotations

import sys
import time
import uuid
from contextlib import closing
from pathlib import Path

import httpx
import orjson
import psycopg2

from common import db, tokens
from common.settings import SharedSettings
from services.control import accounts, destinations

GATE = "http://127.0.0.1:8080"
WAREHOUSE = {"host": "127.0.0.1", "port": "5433", "dbname": "warehouse", "user": "postgres"}
SCHEMA = "demo"
TABLE = "demo_orders"


def demo_client(run_dir: Path) -> tuple[int, str]:
    """The demo client's id and token (created once, kept in the run directory), with the demo
    warehouse as its destination (set each time: its password is the stack's, in .run/secrets)."""
    saved = run_dir / "demo-client.json"
    with closing(db.connect()) as conn:
        if saved.exists():
            data = orjson.loads(saved.read_bytes())
            client_id, token = data["client_id"], data["token"]
        else:
            client_id = accounts.create_client(conn, "demo")["client_id"]
            token = tokens.create_api_token(conn, client_id)["token"]
            saved.write_bytes(orjson.dumps({"client_id": client_id, "token": token}))
            saved.chmod(0o600)
        destinations.set_destination(
            conn,
            SharedSettings().secret_key.get_secret_value(),
            client_id,
            "postgres",
            {"dsn_params": WAREHOUSE, "schema": SCHEMA},
            {"password": warehouse_password(run_dir)},
        )
    return client_id, token


def warehouse_password(run_dir: Path) -> str:
    return (run_dir / "secrets" / "pg-warehouse").read_text().strip()


def demo_rows(run_dir: Path, run: str) -> list[tuple[object, ...]]:
    try:
        with (
            closing(
                psycopg2.connect(
                    connect_timeout=3, password=warehouse_password(run_dir), **WAREHOUSE
                )
            ) as conn,
            conn.cursor() as cur,
        ):
            cur.execute(
                f'SELECT id, amount, _sdc_received_at, _sdc_batched_at FROM {SCHEMA}."{TABLE}" '  # noqa: S608
                "WHERE id LIKE %s ORDER BY id",
                (f"{run}-%",),
            )
            return cur.fetchall()
    except psycopg2.Error:
        return []


def main(run_dir: Path) -> int:
    client_id, token = demo_client(run_dir)
    run = uuid.uuid4().hex[:8]
    body = {
        "table_name": TABLE,
        "schema": {"properties": {"id": {"type": "string"}, "amount": {"type": "number"}}},
        "key_names": ["id"],
        "messages": [
            {
                "action": "upsert",
                "sequence": time.time_ns() + i,
                "data": {"id": f"{run}-{i}", "amount": i * 1.5},
            }
            for i in range(5)
        ],
    }
    response = httpx.post(
        f"{GATE}/v2/import/batch",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        content=orjson.dumps(body),
        timeout=30,
    )
    print(f"demo: POST /v2/import/batch (client {client_id}, 5 records)", end=" ")
    print(f"-> {response.status_code} {response.text}")
    if response.status_code != 202:
        return 1
    began = time.monotonic()
    while time.monotonic() - began < 120:
        rows = demo_rows(run_dir, run)
        if len(rows) == 5:
            took = time.monotonic() - began
            print(
                f"demo: rows in the warehouse {WAREHOUSE['host']}:{WAREHOUSE['port']}/"
                f"{WAREHOUSE['dbname']} table {SCHEMA}.{TABLE} after {took:.1f} s:"
            )
            for row_id, amount, received, batched in rows:
                print(
                    f"  id={row_id} amount={amount} _sdc_received_at={received:%H:%M:%S.%f} "
                    f"_sdc_batched_at={batched:%H:%M:%S.%f}"
                )
            return 0
        time.sleep(0.5)
    print("demo: the records did not reach the warehouse within 120 s (see .run/logs)")
    return 1


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
