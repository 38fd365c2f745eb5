"""The loader conformance suite against the real demo-warehouse Postgres (127.0.0.1:5433)."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg2
import pytest
from psycopg2 import sql

from services.loaders.core.errors import PermanentError
from services.loaders.postgres import errors, warehouse
from services.loaders.postgres.statements import REJECTED, RULES
from tests.conformance.cases import CASES, Case, Line, header
from tests.conformance.runner import case_params, run_case, to_events
from tests.integration.conformance_support import SchemaHarness


class PostgresHarness(SchemaHarness):
    warehouse = "postgres"
    prefix = "conf"
    rules = RULES
    rejected_table = REJECTED

    def load(self, case: Case, batch_id: int, lines: list[Line]) -> None:
        schema = self.schema(case)
        warehouse.ensure_metadata(self.conn, schema)
        work = warehouse.LeaseLoad(case.table, [batch_id], "token", to_events(lines))
        try:
            warehouse.load(self.conn, schema, work)
        except Exception as exc:
            raise errors.classify(exc) from exc


@pytest.fixture(scope="module")
def harness() -> Iterator[PostgresHarness]:
    with PostgresHarness.connected() as h:
        yield h


@pytest.mark.parametrize("case", case_params())
def test_conformance(harness: PostgresHarness, case: Case) -> None:
    run_case(harness, case, (PermanentError,))


def test_a_batch_already_loaded_is_not_loaded_again(harness: PostgresHarness) -> None:
    case = CASES[0]
    schema = harness.schema(case) + "_again"
    conn = harness.conn
    warehouse.ensure_metadata(conn, schema)
    lines = case.batches[0]
    warehouse.load(conn, schema, warehouse.LeaseLoad(case.table, [77], "t1", to_events(lines)))
    assert warehouse.loaded_batches(conn, schema, [77, 78]) == {77}
    with pytest.raises(psycopg2.errors.UniqueViolation):
        warehouse.load(conn, schema, warehouse.LeaseLoad(case.table, [77], "t2", to_events(lines)))
    with conn, conn.cursor() as cur:
        cur.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, "flat")))
        assert cur.fetchone() == (2,)
        cur.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


@pytest.mark.parametrize("direct", [True, False], ids=["straight_into_the_table", "merge_only"])
def test_chunked_loads_keep_the_greatest_sequence_whichever_way_rows_go_in(
    harness: PostgresHarness, monkeypatch: pytest.MonkeyPatch, direct: bool
) -> None:
    """Rows go in 3-row chunks, straight into the table while their keys are new (falling back
    to the merge when a key exists or repeats), or always merged: the same table either way,
    holding each key's greatest sequence (ties: the later record), _sdc_batched_at the load's
    time."""
    monkeypatch.setattr(warehouse, "CHUNK_ROWS", 3)
    if not direct:
        monkeypatch.setattr(warehouse.ChunkMerger, "_try_direct", lambda self, chunk: False)
    schema = f"conf_{harness.run}_chunks_{direct}"
    conn = harness.conn
    warehouse.ensure_metadata(conn, schema)
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
        warehouse.load(conn, schema, warehouse.LeaseLoad("t", [n], "token", to_events(lines)))
    with conn, conn.cursor() as cur:
        cur.execute(
            sql.SQL(
                "SELECT id, _sdc_sequence, v, _sdc_batched_at IS NOT NULL FROM {} ORDER BY id"
            ).format(sql.Identifier(schema, "t"))
        )
        got = cur.fetchall()
        cur.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
    assert got == [(k, s, v, True) for k, (s, v) in sorted(expected.items())]


def test_subtable_rows_follow_their_parents_across_chunks(
    harness: PostgresHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Root rows are numbered by their line in each chunk; a child row carries its parent's
    number. Across 2-row chunks, with parents rewritten by a later record, every parent keeps
    exactly the child rows of its winning record."""
    monkeypatch.setattr(warehouse, "CHUNK_ROWS", 2)
    schema = f"conf_{harness.run}_child_chunks"
    conn = harness.conn
    warehouse.ensure_metadata(conn, schema)
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
    warehouse.load(conn, schema, warehouse.LeaseLoad("o", [1], "token", to_events(lines)))
    with conn, conn.cursor() as cur:
        cur.execute(
            sql.SQL("SELECT _sdc_source_key_id, value FROM {} ORDER BY 1, _sdc_level_0_id").format(
                sql.Identifier(schema, "o__tags")
            )
        )
        got = cur.fetchall()
        cur.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
    assert got == [(1, "d"), (2, "c"), (4, "e"), (4, "f"), (4, "g"), (5, "h")]
