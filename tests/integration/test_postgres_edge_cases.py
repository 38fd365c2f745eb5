"""The Postgres loader on edge cases found by review: names and types it did not make, records
shaped unusually, and activations that arrive before their column exists."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import psycopg2
import pytest
from psycopg2 import sql

from services.loaders.core import native
from services.loaders.postgres import statements, warehouse
from tests.conformance.cases import Line, activate, header, up
from tests.conformance.runner import to_events
from tests.integration.conformance_support import WAREHOUSE_DSN


@pytest.fixture
def db() -> Iterator[tuple[Any, str]]:
    conn = psycopg2.connect(WAREHOUSE_DSN)
    schema = f"edge_{uuid.uuid4().hex[:8]}"
    warehouse.ensure_metadata(conn, schema)
    yield conn, schema
    with conn, conn.cursor() as cur:
        cur.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
    conn.close()


def date_time_schema(field: str) -> dict[str, Any]:
    return {
        "properties": {"id": {"type": "integer"}, field: {"type": "string", "format": "date-time"}}
    }


def load(conn: Any, schema: str, table: str, batch_id: int, lines: list[Line]) -> None:
    work = warehouse.LeaseLoad(table, [batch_id], "token", to_events(lines, native.available()))
    warehouse.load(conn, schema, work)


def rows(conn: Any, query: sql.Composable) -> list[tuple[Any, ...]]:
    with conn, conn.cursor() as cur:
        cur.execute(query)
        return list(cur.fetchall())


def test_tables_named_like_the_loaders_temporary_ones_are_left_alone(
    db: tuple[Any, str],
) -> None:
    conn, schema = db
    bystanders = ["stg_0", "win_0", "won_0", "stg_0_c0"]
    with conn, conn.cursor() as cur:
        cur.execute(sql.SQL("SET search_path = {}").format(sql.Identifier(schema)))
        for name in bystanders:
            cur.execute(sql.SQL("CREATE TABLE {} (x int)").format(sql.Identifier(schema, name)))
    load(conn, schema, "t", 1, [header("t", ["id"]), up(1, {"id": 1}), up(2, {"id": 1})])
    load(conn, schema, "t", 2, [header("t", ["id"]), up(3, {"id": 2, "tags": ["a"]})])
    with conn, conn.cursor() as cur:
        cur.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s "
            "AND table_name = ANY(%s) ORDER BY 1",
            (schema, bystanders),
        )
        left = [r[0] for r in cur.fetchall()]
    assert left == sorted(bystanders)


def test_a_data_field_named_sdc_row_never_numbers_rows(db: tuple[Any, str]) -> None:
    conn, schema = db
    load(
        conn,
        schema,
        "t",
        1,
        [
            header("t", ["id"]),
            up(1, {"id": 1, "_sdc_row": "x", "tags": ["a", "b"]}),
            up(2, {"id": 2, "tags": ["c"]}),
        ],
    )
    got = rows(
        conn,
        sql.SQL("SELECT _sdc_source_key_id, value FROM {} ORDER BY 1, 2").format(
            sql.Identifier(schema, "t__tags")
        ),
    )
    assert got == [(1, "a"), (1, "b"), (2, "c")]


def test_columns_of_types_the_loader_did_not_make_get_the_merges_casts(
    db: tuple[Any, str],
) -> None:
    conn, schema = db
    with conn, conn.cursor() as cur:
        cur.execute(
            sql.SQL(
                "CREATE TABLE {} (id bigint PRIMARY KEY, ts timestamp without time zone, "
                "_sdc_sequence bigint, _sdc_received_at timestamptz, _sdc_batched_at timestamptz)"
            ).format(sql.Identifier(schema, "t"))
        )
    schema_doc = date_time_schema("ts")
    stamp = "2024-01-01T00:00:00+02:00"
    load(conn, schema, "t", 1, [header("t", ["id"], schema_doc), up(1, {"id": 1, "ts": stamp})])
    (got,) = rows(conn, sql.SQL("SELECT ts FROM {}").format(sql.Identifier(schema, "t")))
    with conn, conn.cursor() as cur:  # what the merge's assignment cast makes of it
        cur.execute("SELECT %s::timestamptz::timestamp", (stamp,))
        (cast,) = cur.fetchone()
    assert got[0] == cast


def test_an_activation_before_the_version_column_exists_clears_the_old_rows(
    db: tuple[Any, str],
) -> None:
    conn, schema = db
    load(conn, schema, "t", 1, [header("t", ["id"]), up(1, {"id": 1}), up(2, {"id": 2})])
    # Singer's full-table start: ACTIVATE_VERSION first, then the version's records.
    lines: list[Line] = [
        header("t", ["id"], version=5),
        {"action": "activate_version", "sequence": 3},
        up(4, {"id": 2}),
        up(5, {"id": 3}),
    ]
    load(conn, schema, "t", 2, lines)
    got = rows(
        conn,
        sql.SQL("SELECT id, _sdc_table_version FROM {} ORDER BY id").format(
            sql.Identifier(schema, "t")
        ),
    )
    assert got == [(2, 5), (3, 5)]


def test_empty_arrays_load_and_clear_the_parents_old_subtable_rows(
    db: tuple[Any, str],
) -> None:
    conn, schema = db
    load(conn, schema, "t", 1, [header("t", ["id"]), up(1, {"id": 1, "tags": ["a", "b"]})])
    load(conn, schema, "t", 2, [header("t", ["id"]), up(2, {"id": 1, "tags": []})])
    load(conn, schema, "u", 3, [header("u", ["id"]), up(1, {"id": 1, "tags": []})])
    children = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, "t__tags"))
    assert rows(conn, children) == [(0,)]
    assert rows(conn, sql.SQL("SELECT id FROM {}").format(sql.Identifier(schema, "u"))) == [(1,)]


def test_a_nul_in_a_date_time_that_does_not_parse_rejects_only_that_record(
    db: tuple[Any, str],
) -> None:
    conn, schema = db
    schema_doc = date_time_schema("at")
    lines: list[Line] = [
        header("t", ["id"], schema_doc),
        up(1, {"id": 1, "at": "not\x00a date"}),
        up(2, {"id": 2, "at": "2026-11-26T10:00:00Z"}),
    ]
    load(conn, schema, "t", 1, lines)
    assert rows(conn, sql.SQL("SELECT id FROM {}").format(sql.Identifier(schema, "t"))) == [(2,)]
    rejected = rows(
        conn, sql.SQL("SELECT reason FROM {}").format(sql.Identifier(schema, "_sdc_rejected"))
    )
    assert len(rejected) == 1 and "NUL" in rejected[0][0]


# 60 bytes: too long for "<root>__items" to fit in 63, so the subtable's name is hashed and
# does not start with the whole root name. The two roots share their first 58 bytes.
LONG_ROOT = "customer_subscription_invoice_line_items_with_tax_breakdowns"
LONG_TWIN = LONG_ROOT[:58] + "zz"


def subtables(conn: Any, schema: str) -> list[str]:
    """The schema's tables other than the roots and the loader's bookkeeping."""
    with conn, conn.cursor() as cur:
        cur.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s "
            "AND NOT table_name = ANY(%s) ORDER BY 1",
            (schema, [LONG_ROOT, LONG_TWIN, statements.LOADS, statements.REJECTED]),
        )
        return [r[0] for r in cur.fetchall()]


def item_rows(conn: Any, schema: str, table: str) -> list[tuple[Any, ...]]:
    return rows(
        conn,
        sql.SQL(
            "SELECT _sdc_source_key_id, _sdc_level_0_id, sku, qty, note FROM {} ORDER BY 1, 2"
        ).format(sql.Identifier(schema, table)),
    )


def test_subtables_of_a_root_name_near_the_length_limit_are_found_on_later_loads(
    db: tuple[Any, str],
) -> None:
    conn, schema = db
    assert len(LONG_ROOT.encode()) == 60
    first: list[Line] = [
        header(LONG_ROOT, ["id"]),
        up(1, {"id": 1, "name": "a", "items": [{"sku": "x", "qty": 1}, {"sku": "y", "qty": 2}]}),
        up(2, {"id": 2, "name": "b", "items": [{"sku": "z", "qty": 3}]}),
    ]
    load(conn, schema, LONG_ROOT, 1, first)
    (child,) = subtables(conn, schema)
    # The items gain a field (the subtable gets a column), id 1 is updated, id 3 is new.
    second: list[Line] = [
        header(LONG_ROOT, ["id"]),
        up(3, {"id": 1, "name": "a2", "items": [{"sku": "x", "qty": 5, "note": "gift"}]}),
        up(4, {"id": 3, "name": "c", "items": [{"sku": "w", "qty": 1, "note": "n"}]}),
    ]
    load(conn, schema, LONG_ROOT, 2, second)
    assert subtables(conn, schema) == [child]
    root = sql.SQL("SELECT id, name FROM {} ORDER BY id").format(sql.Identifier(schema, LONG_ROOT))
    assert rows(conn, root) == [(1, "a2"), (2, "b"), (3, "c")]
    assert item_rows(conn, schema, child) == [
        (1, 0, "x", 5, "gift"),
        (2, 0, "z", 3, None),
        (3, 0, "w", 1, "n"),
    ]


def test_long_roots_with_the_same_first_bytes_keep_their_subtables_apart(
    db: tuple[Any, str],
) -> None:
    conn, schema = db
    assert LONG_ROOT[:58] == LONG_TWIN[:58] and LONG_ROOT != LONG_TWIN

    def run(table: str, batch_id: int, version: int, *lines: Line) -> set[str]:
        before = set(subtables(conn, schema))
        load(conn, schema, table, batch_id, [header(table, ["id"], version=version), *lines])
        return set(subtables(conn, schema)) - before

    def skus(table: str) -> list[tuple[Any, ...]]:
        query = sql.SQL("SELECT _sdc_source_key_id, sku FROM {} ORDER BY 1, 2")
        return rows(conn, query.format(sql.Identifier(schema, table)))

    (items,) = run(LONG_ROOT, 1, 1, up(1, {"id": 1, "items": [{"sku": "a"}]}))
    (twin_items,) = run(LONG_TWIN, 2, 1, up(1, {"id": 1, "items": [{"sku": "b"}]}))
    # id 1 rewritten without items: its old items go, the twin's (same key) stay.
    (tags,) = run(LONG_ROOT, 3, 1, up(2, {"id": 1, "tags": ["t"]}))
    assert skus(items) == [] and skus(twin_items) == [(1, "b")]
    # A new version activated: the root's older rows and subtable rows go, the twin's stay.
    assert not run(LONG_ROOT, 4, 2, activate(3), up(4, {"id": 2, "items": [{"sku": "c"}]}))
    assert rows(conn, sql.SQL("SELECT id FROM {}").format(sql.Identifier(schema, LONG_ROOT))) == [
        (2,)
    ]
    assert skus(items) == [(2, "c")] and skus(twin_items) == [(1, "b")]
    assert rows(conn, sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, tags))) == [
        (0,)
    ]


def test_bookkeeping_tables_dropped_by_hand_come_back_before_the_next_load() -> None:
    """``already_loaded`` asks in one round trip; a missing ``_sdc_loads`` or
    ``_sdc_rejected`` (or schema) makes it create them first, so the load that follows records
    its batch and its rejected records instead of failing."""
    conn = psycopg2.connect(WAREHOUSE_DSN)
    schema = f"edge_{uuid.uuid4().hex[:8]}"
    try:
        assert warehouse.already_loaded(conn, schema, [1]) == set()  # no schema yet
        load(conn, schema, "t", 1, [header("t", ["id"]), up(1, {"id": 1})])
        assert warehouse.already_loaded(conn, schema, [1, 2]) == {1}
        with conn, conn.cursor() as cur:
            cur.execute(
                sql.SQL("DROP TABLE {}").format(sql.Identifier(schema, statements.REJECTED))
            )
        assert warehouse.already_loaded(conn, schema, [1, 2]) == {1}
        load(conn, schema, "t", 2, [header("t", ["id"]), up(2, {"id": 2}), up(3, {"name": "x"})])
        rejected = rows(
            conn,
            sql.SQL("SELECT batch_ids FROM {}").format(sql.Identifier(schema, "_sdc_rejected")),
        )
        assert rejected == [([2],)]
        assert warehouse.already_loaded(conn, schema, [1, 2]) == {1, 2}
    finally:
        with conn, conn.cursor() as cur:
            cur.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
        conn.close()


def test_a_clients_first_loads_racing_to_create_its_schema_all_succeed() -> None:
    """Several tables of a new client load at once: each finds no bookkeeping tables and
    creates them; none fails on the catalog's unique index (a permanent error would park its
    batch dead)."""
    import threading

    conns = [psycopg2.connect(WAREHOUSE_DSN) for _ in range(6)]
    schemas = [f"edge_{uuid.uuid4().hex[:8]}" for _ in range(5)]
    errors: list[BaseException] = []
    try:
        for schema in schemas:
            start = threading.Barrier(len(conns))

            def first_load(conn: Any, schema: str = schema, start: Any = start) -> None:
                start.wait()
                try:
                    assert warehouse.already_loaded(conn, schema, [1]) == set()
                except BaseException as exc:
                    errors.append(exc)

            threads = [threading.Thread(target=first_load, args=(c,)) for c in conns]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        assert errors == []
    finally:
        with conns[0], conns[0].cursor() as cur:
            for schema in schemas:
                cur.execute(
                    sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema))
                )
        for c in conns:
            c.close()
