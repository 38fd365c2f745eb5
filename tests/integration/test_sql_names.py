"""SQL-hostile table and column names through the gate land in the client's Postgres
warehouse as exactly those names, safely quoted, and nothing else in the warehouse is touched."""

from __future__ import annotations

import uuid
from contextlib import closing

import httpx
import orjson
from psycopg2 import sql

from support.gate import push_record
from support.stack import GATE, wait_for
from support.tenants import new_tenant
from support.warehouse import DEMO_WAREHOUSE, schema_tables, table_rows, warehouse


def test_sql_hostile_table_and_column_names_land_quoted_and_touch_nothing_else() -> None:
    marker = uuid.uuid4().hex[:6]
    canary = f"canary_{marker}"
    with closing(warehouse()) as conn, conn.cursor() as cur:
        cur.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(canary)))
        cur.execute(
            sql.SQL("CREATE TABLE {} (id int primary key, name text)").format(
                sql.Identifier(canary, "victims")
            )
        )
        cur.execute(
            sql.SQL("INSERT INTO {} VALUES (1, 'a'), (2, 'b'), (3, 'c')").format(
                sql.Identifier(canary, "victims")
            )
        )
    tenant = new_tenant("sqlnames", DEMO_WAREHOUSE)
    assert tenant.schema
    target = f'"{canary}".victims'
    tables = [
        f'{marker} x"; DROP TABLE {target}; --',
        f"{marker} Robert'); DROP TABLE {target};--",
        f"{marker}.victims",
        f"{marker} %s %(x)s {{}} {{0}}",
        f"{marker} $$; TRUNCATE {target}; $$",
        f'{marker} "" \\ ` ; /* */ -- ',
        f"{marker} Ünïcødé ☃ 表",
    ]
    columns = [
        f'c"); DELETE FROM {target}; --',
        "' OR '1'='1",
        "%s",
        "{}",
        "x::text",
        'a""b',
        "Mixed Case",
        "semi;colon",
    ]
    key = 'k"ey; DROP SCHEMA ' + canary + " CASCADE"
    records = []
    for t, table in enumerate(tables):
        for i in range(3):
            data = {key: i, **{c: f"{t}-{i}-{j}" for j, c in enumerate(columns)}}
            records.append(
                {**push_record(tenant.client_id, table, i + 1, data), "key_names": [key]}
            )
    r = httpx.post(
        f"{GATE}/v2/import/push",
        content=orjson.dumps(records),
        headers=tenant.headers(),
        timeout=30,
    )
    assert r.status_code == 202, r.text

    schema = tenant.schema
    for t, table in enumerate(tables):
        got = wait_for(
            lambda table=table: len(table_rows(schema, table, [key])) == 3,
            timeout=240,
            interval=1,
            what=f"the rows of table {table!r}",
        )
        assert got
        rows = table_rows(schema, table, [key, *columns])
        assert rows == [(i, *[f"{t}-{i}-{j}" for j in range(len(columns))]) for i in range(3)]

    with closing(warehouse()) as conn, conn.cursor() as cur:
        cur.execute(
            sql.SQL("SELECT id, name FROM {} ORDER BY id").format(sql.Identifier(canary, "victims"))
        )
        assert cur.fetchall() == [(1, "a"), (2, "b"), (3, "c")]
        # Every table bearing the marker is one of ours, in the client's own schema.
        cur.execute(
            "SELECT table_schema, table_name FROM information_schema.tables"
            " WHERE strpos(table_name, %s) > 0",
            (marker,),
        )
        assert sorted(cur.fetchall()) == sorted((schema, t) for t in tables)
        cur.execute(
            "SELECT count(*) FROM information_schema.schemata WHERE strpos(schema_name, %s) > 0",
            (marker,),
        )
        assert cur.fetchone() == (1,)  # the canary's schema only
        cur.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(canary)))
    assert "_sdc_rejected" not in schema_tables(schema) or not table_rows(
        schema, "_sdc_rejected", ["table_name"]
    )


def test_sql_hostile_names_in_a_batch_schema_are_only_names() -> None:
    """The same through /batch, whose JSON Schema names the hostile columns and tables."""
    tenant = new_tenant("sqlschema", DEMO_WAREHOUSE)
    assert tenant.schema
    table = "orders'; DROP TABLE _sdc_loads; --"
    column = 'amount"; UPDATE _sdc_loads SET records = 0; --'
    body = {
        "table_name": table,
        "key_names": ["id"],
        "schema": {"properties": {"id": {"type": "integer"}, column: {"type": "number"}}},
        "messages": [
            {"action": "upsert", "sequence": i, "data": {"id": i, column: i * 1.5}}
            for i in range(5)
        ],
    }
    r = httpx.post(f"{GATE}/v2/import/batch", json=body, headers=tenant.headers(), timeout=30)
    assert r.status_code == 202, r.text
    wait_for(
        lambda: len(table_rows(tenant.schema, table, ["id"])) == 5,
        timeout=240,
        interval=1,
        what="the batch's rows",
    )
    assert table_rows(tenant.schema, table, ["id", column]) == [(i, i * 1.5) for i in range(5)]
    with closing(warehouse()) as conn, conn.cursor() as cur:
        cur.execute(
            sql.SQL("SELECT count(*), min(records) FROM {}").format(
                sql.Identifier(tenant.schema, "_sdc_loads")
            )
        )
        count, least = cur.fetchone()
    assert count >= 1 and least >= 1  # the loads table is intact and was not rewritten
