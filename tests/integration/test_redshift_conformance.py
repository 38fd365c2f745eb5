"""The loader conformance suite for Redshift, its merge logic executed on the demo-warehouse
Postgres (127.0.0.1:5433) where the two dialects agree, driving the loader only through its
``Warehouse`` protocol (with two stand-ins: ``RedshiftOnPostgres``).

Real here: every statement the Redshift loader generates except COPY (DDL, comments, LOCK,
the staging-table merge, subtables, activate_version, _sdc_loads/_sdc_rejected), the staged
gzip JSON object and its JSONPaths uploaded to S3 (the local SeaweedFS) and read back.
Not covered: the COPY statement itself (Postgres cannot read S3: a stand-in reads the staged
object and INSERTs its rows), Redshift's own type coercions and VARCHAR byte limits, and
``redshift-connector`` (it sends startup parameters plain Postgres refuses, so the tests use
psycopg2). The SQL is also parsed with sqlglot's Redshift dialect (tests/unit).
"""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Iterator
from typing import Any

import psycopg2
import psycopg2.extensions
import psycopg2.extras
import pytest
from psycopg2 import sql

from common.settings import SharedSettings
from services.loaders.core.errors import PermanentError
from services.loaders.core.protocol import Destination
from services.loaders.redshift import statements as S
from services.loaders.redshift.loader import RedshiftWarehouse
from services.loaders.redshift.staging import S3Copier, StagedFile
from tests.conformance.cases import CASES, Case, Line, header
from tests.conformance.runner import case_params, run_case
from tests.integration.conformance_support import (
    WAREHOUSE_DSN,
    WAREHOUSE_DSN_PARAMS,
    SchemaHarness,
)


def quote_aware(statement: str) -> str:
    """``%`` inside double-quoted identifiers doubled: redshift-connector reads ``%s`` only
    outside quotes (its own scanner), psycopg2 everywhere, so a name such as ``x%s`` needs this
    to reach the stand-in as it reaches Redshift."""
    return re.sub(r'"(?:[^"]|"")*"', lambda m: m.group(0).replace("%", "%%"), statement)


class QuoteAwareCursor(psycopg2.extensions.cursor):
    def execute(self, query: Any, vars: Any = None) -> None:
        if vars is not None and isinstance(query, str):
            query = quote_aware(query)
        super().execute(query, vars)

    def executemany(self, query: Any, vars_list: Any) -> None:
        if isinstance(query, str):
            query = quote_aware(query)
        super().executemany(query, vars_list)


class PostgresCopy(S3Copier):
    """Uploads like production, then reads the staged object back instead of COPY."""

    def copy(self, cur: Any, name: str, staged: StagedFile, key: str) -> None:
        data, paths = self.upload(staged, key)
        body = self.s3.get_object(Bucket=self.bucket, Key=data)["Body"].read()
        jsonpaths = json.loads(self.s3.get_object(Bucket=self.bucket, Key=paths)["Body"].read())
        assert jsonpaths["jsonpaths"] == [f"$[{i}]" for i in range(len(staged.staged.order))]
        rows = [json.loads(line) for line in gzip.decompress(body).splitlines()]
        statement = sql.SQL("INSERT INTO {} ({}) VALUES %s").format(
            sql.Identifier(name), sql.SQL(", ").join(map(sql.Identifier, staged.staged.order))
        )
        psycopg2.extras.execute_values(
            cur, quote_aware(statement.as_string(cur)), rows, page_size=1000
        )
        self.remove(data, paths)


def destination_config() -> dict[str, Any]:
    shared = SharedSettings()
    return {
        "s3_bucket": shared.s3_bucket,
        "s3_prefix": "redshift-staging-tests",
        "s3_endpoint": shared.s3_endpoint,
        "s3_region": "us-east-1",
        "aws_access_key_id": shared.s3_access_key,
    }


class RedshiftOnPostgres(RedshiftWarehouse):
    """The Redshift loader with stand-ins for what plain Postgres lacks: its sessions are
    psycopg2 connections to the demo warehouse (``QuoteAwareCursor``), and COPY from S3 is
    ``PostgresCopy``."""

    def __init__(self) -> None:
        super().__init__(copier=PostgresCopy)

    def open(self, destination: Destination) -> Any:
        conn = psycopg2.connect(WAREHOUSE_DSN)
        conn.cursor_factory = QuoteAwareCursor
        return conn

    def close(self, session: Any) -> None:
        session.close()


def destination(schema: str) -> Destination:
    """A client's destination on the demo warehouse (as Redshift), loading into ``schema``,
    staging in the local S3."""
    secret = SharedSettings().s3_secret_key.get_secret_value()
    config = {"dsn_params": WAREHOUSE_DSN_PARAMS, "schema": schema, **destination_config()}
    return Destination(1, "redshift", config, {"aws_secret_access_key": secret})


class RedshiftHarness(SchemaHarness):
    warehouse = "redshift"
    prefix = "rs"
    rules = S.RULES
    rejected_table = S.REJECTED

    def loader(self) -> RedshiftOnPostgres:
        return RedshiftOnPostgres()

    def destination(self, schema: str) -> Destination:
        return destination(schema)


@pytest.fixture(scope="module")
def harness() -> Iterator[RedshiftHarness]:
    with RedshiftHarness.connected() as h:
        yield h


# Where the dialects disagree: Redshift names reach 127 bytes, Postgres truncates at 63 (the
# Redshift name rules are unit-tested instead).
POSTGRES_GAPS = {"hostile_and_unicode_names": "Postgres truncates names at 63 bytes"}


@pytest.mark.parametrize("case", case_params(skip=POSTGRES_GAPS))
def test_conformance(harness: RedshiftHarness, case: Case) -> None:
    run_case(harness, case, (PermanentError,))


def test_a_batch_already_loaded_is_not_loaded_again(harness: RedshiftHarness) -> None:
    case = CASES[0]
    schema = harness.schema(case) + "_again"
    conn, driver, again = harness.conn, harness.driver, destination(schema)
    lines = case.batches[0]
    assert driver.load(again, case.table, [77], lines, token="t1") == (2, 0)
    assert driver.already_loaded(again, [77, 78]) == {77}
    # A lease holding it again (it raced the first to the commit): rolled back, nothing twice.
    assert driver.load(again, case.table, [77], lines, token="t2", skip_loaded=False) == (0, 0)
    with conn, conn.cursor() as cur:
        cur.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, "flat")))
        assert cur.fetchone() == (2,)


def test_varchar_columns_widen_and_keys_sit_in_the_table_comment(
    harness: RedshiftHarness,
) -> None:
    schema = f"rs_{harness.run}_widen"
    conn, widen = harness.conn, destination(schema)
    head = header("w", ["id"])
    short = [head, {"action": "upsert", "sequence": 1, "data": {"id": 1, "s": "x"}}]
    long = [head, {"action": "upsert", "sequence": 2, "data": {"id": 2, "s": "y" * 3000}}]
    harness.driver.load(widen, "w", [1], short, token="t")
    harness.driver.load(widen, "w", [2], long, token="t")
    with conn, conn.cursor() as cur:
        cur.execute(
            "SELECT character_maximum_length FROM information_schema.columns "
            "WHERE table_schema = %s AND table_name = 'w' AND column_name = 's'",
            (schema,),
        )
        assert cur.fetchone() == (4096,)
        cur.execute(
            "SELECT obj_description(c.oid, 'pg_class') FROM pg_catalog.pg_class c "
            "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relname = %s",
            (schema, "w"),
        )
        assert json.loads(cur.fetchone()[0]) == {"primary_keys": ["id"]}
        cur.execute(
            sql.SQL("SELECT length(s) FROM {} ORDER BY id").format(sql.Identifier(schema, "w"))
        )
        assert cur.fetchall() == [(1,), (3000,)]


def test_subtables_of_a_root_whose_name_is_hashed_are_found_on_later_loads(
    harness: RedshiftHarness,
) -> None:
    # Capitals: Redshift's rules hash the root's name ("orders_<hash>"), so no subtable name
    # can start with it.
    schema, table = f"rs_{harness.run}_hashed_root", "Orders"
    conn, hashed = harness.conn, destination(schema)

    def load(batch_id: int, *records: tuple[int, dict[str, Any]]) -> None:
        lines: list[Line] = [
            header(table, ["id"]),
            *({"action": "upsert", "sequence": s, "data": d} for s, d in records),
        ]
        harness.driver.load(hashed, table, [batch_id], lines, token="t")

    def tables() -> list[str]:
        with conn, conn.cursor() as cur:
            cur.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %s "
                "AND table_name NOT LIKE %s ORDER BY 1",
                (schema, "\\_sdc\\_%"),
            )
            return [r[0] for r in cur.fetchall()]

    def rows(query: str, name: str) -> list[tuple[Any, ...]]:
        with conn, conn.cursor() as cur:
            cur.execute(sql.SQL(query).format(sql.Identifier(schema, name)))
            return list(cur.fetchall())

    load(1, (1, {"id": 1, "items": [{"sku": "x"}, {"sku": "y"}]}), (2, {"id": 2, "items": []}))
    root = S.RULES.table(table)
    (child,) = set(tables()) - {root}
    load(2, (3, {"id": 1, "items": [{"sku": "x", "qty": 5}]}), (4, {"id": 3, "items": [{}]}))
    assert tables() == sorted([root, child])
    assert rows("SELECT id FROM {} ORDER BY 1", root) == [(1,), (2,), (3,)]
    query = "SELECT _sdc_source_key_id, _sdc_level_0_id, sku, qty FROM {} ORDER BY 1, 2"
    assert rows(query, child) == [(1, 0, "x", 5), (3, 0, None, None)]
