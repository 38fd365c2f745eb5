"""The loader conformance suite against the real demo-warehouse Postgres (127.0.0.1:5433),
driving the loader only through its ``Warehouse`` protocol."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from psycopg2 import sql

from services.loaders.core.errors import PermanentError
from services.loaders.core.protocol import Destination
from services.loaders.postgres.loader import PostgresWarehouse
from services.loaders.postgres.statements import REJECTED, RULES
from tests.conformance.cases import CASES, Case, Line, header
from tests.conformance.runner import case_params, run_case
from tests.integration.conformance_support import (
    WAREHOUSE_DSN_PARAMS,
    SchemaHarness,
    ThroughProtocol,
)


def destination(schema: str) -> Destination:
    """A client's destination on the demo warehouse, loading into ``schema``."""
    return Destination(1, "postgres", {"dsn_params": WAREHOUSE_DSN_PARAMS, "schema": schema}, {})


class PostgresHarness(SchemaHarness):
    warehouse = "postgres"
    prefix = "conf"
    rules = RULES
    rejected_table = REJECTED

    def loader(self) -> PostgresWarehouse:
        return PostgresWarehouse()

    def destination(self, schema: str) -> Destination:
        return destination(schema)


class PostgresLinesHarness(PostgresHarness):
    """Batches read line by line, as the loader reads them without its native plans."""

    text = False


@pytest.fixture(scope="module", params=["as_the_runner_reads", "line_by_line"])
def harness(request: pytest.FixtureRequest) -> Iterator[PostgresHarness]:
    kind = PostgresHarness if request.param == "as_the_runner_reads" else PostgresLinesHarness
    with kind.connected() as h:
        yield h


@pytest.mark.parametrize("case", case_params())
def test_conformance(harness: PostgresHarness, case: Case) -> None:
    run_case(harness, case, (PermanentError,))


def test_a_batch_already_loaded_is_not_loaded_again(harness: PostgresHarness) -> None:
    case = CASES[0]
    schema = harness.schema(case) + "_again"
    conn, driver, again = harness.conn, harness.driver, destination(schema)
    lines = case.batches[0]
    driver.load(again, case.table, [77], lines, token="t1")
    assert driver.already_loaded(again, [77, 78]) == {77}
    # A lease holding it again (it raced the first to the commit): the commit fails on
    # _sdc_loads' key and rolls back, and the load counts as already done.
    assert driver.load(again, case.table, [77], lines, token="t2", skip_loaded=False) == (0, 0)
    with conn, conn.cursor() as cur:
        cur.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, "flat")))
        assert cur.fetchone() == (2,)
        cur.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


@pytest.mark.parametrize("direct", [True, False], ids=["straight_into_the_table", "merge_only"])
def test_chunked_loads_keep_the_greatest_sequence_whichever_way_rows_go_in(
    harness: PostgresHarness, direct: bool
) -> None:
    """Rows go in 3-row chunks, straight into the table while their keys are new (falling back
    to the merge when a key exists or repeats), or always merged: the same table either way,
    holding each key's greatest sequence (ties: the later record), _sdc_batched_at the load's
    time."""
    driver = ThroughProtocol(PostgresWarehouse(chunk_rows=3, straight_in=direct))
    schema = f"conf_{harness.run}_chunks_{direct}"
    conn, chunked = harness.conn, destination(schema)
    head = header("t", ["id"])
    expected: dict[int, tuple[int, str]] = {}
    batches = [
        [(i, 10, f"a{i}") for i in range(1, 11)],  # all new: straight in
        [(i, 20, f"b{i}") for i in range(11, 15)],  # new again
        # existing keys, older and newer sequences, and a key twice in one chunk
        [(3, 5, "old"), (4, 30, "new"), (4, 30, "tie-later"), (20, 1, "c"), (5, 10, "same")],
    ]
    for n, batch in enumerate(batches):
        lines: list[Line] = [head]
        for key, sequence, value in batch:
            lines.append(
                {"action": "upsert", "sequence": sequence, "data": {"id": key, "v": value}}
            )
            if key not in expected or sequence >= expected[key][0]:
                expected[key] = (sequence, value)
        driver.load(chunked, "t", [n], lines)
    driver.close()
    with conn, conn.cursor() as cur:
        cur.execute(
            sql.SQL(
                "SELECT id, _sdc_sequence, v, _sdc_batched_at IS NOT NULL FROM {} ORDER BY id"
            ).format(sql.Identifier(schema, "t"))
        )
        got = cur.fetchall()
        cur.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
    assert got == [(k, s, v, True) for k, (s, v) in sorted(expected.items())]


def test_subtable_rows_follow_their_parents_across_chunks(harness: PostgresHarness) -> None:
    """Root rows are numbered by their line in each chunk; a child row carries its parent's
    number. Across 2-row chunks, with parents rewritten by a later record, every parent keeps
    exactly the child rows of its winning record."""
    driver = ThroughProtocol(PostgresWarehouse(chunk_rows=2))
    schema = f"conf_{harness.run}_child_chunks"
    conn, chunked = harness.conn, destination(schema)
    head = header("o", ["id"])
    records = [
        (1, 1, ["a", "b"]),
        (2, 2, ["c"]),
        (3, 3, []),
        (1, 4, ["d"]),  # rewrites 1 in a later chunk
        (4, 5, ["e", "f", "g"]),
        (2, 1, ["stale"]),  # older than 2's record: loses, 2 keeps ["c"]
        (5, 7, ["h"]),
    ]
    lines: list[Line] = [head]
    lines += [
        {"action": "upsert", "sequence": s, "data": {"id": k, "tags": t}} for k, s, t in records
    ]
    driver.load(chunked, "o", [1], lines)
    driver.close()
    with conn, conn.cursor() as cur:
        cur.execute(
            sql.SQL("SELECT _sdc_source_key_id, value FROM {} ORDER BY 1, _sdc_level_0_id").format(
                sql.Identifier(schema, "o__tags")
            )
        )
        got = cur.fetchall()
        cur.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
    assert got == [(1, "d"), (2, "c"), (4, "e"), (4, "f"), (4, "g"), (5, "h")]
