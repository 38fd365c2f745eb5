"""Exactly once into Iceberg (local stack: the lakehouse SQL catalog and S3): batch ids in the
snapshot summaries, one commit per lease, lost commit races retried without a double load, and
a table another engine made (``int``/``float`` columns) widened in place. Rows are read back
through pyiceberg and DuckDB."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pytest
from pyiceberg.schema import Schema
from pyiceberg.table import Table
from pyiceberg.types import FloatType, IntegerType, NestedField

from services.loaders.core.errors import TransientError
from services.loaders.core.protocol import Destination
from services.loaders.iceberg import warehouse as iceberg_warehouse
from services.loaders.iceberg.loader import IcebergWarehouse
from services.loaders.iceberg.statements import BATCH_IDS
from support import lakehouse
from tests.conformance.cases import Line, header, up
from tests.integration.conformance_support import ThroughProtocol


@pytest.fixture
def lake() -> Iterator[Destination]:
    lakehouse.ensure_lakehouse()
    run = uuid.uuid4().hex[:6]
    destination = lakehouse.destination(f"once_{run}", f"lake-tests/{run}")
    yield destination
    lakehouse.drop_namespace(destination)


def driver() -> ThroughProtocol[Any]:
    """A loader process of its own (what it remembers is its own)."""
    return ThroughProtocol(IcebergWarehouse(connect_timeout_s=5, request_timeout_s=60))


def table_of(destination: Destination, name: str) -> Table:
    d = driver()
    try:
        session = d._session(destination)
        return session.catalog.load_table((destination.config["namespace"], name))
    finally:
        d.close()


def rows_of(destination: Destination, name: str) -> list[dict[str, Any]]:
    """The rows through pyiceberg, the same as DuckDB reads them, sorted by id."""
    table = table_of(destination, name)
    mine = [lakehouse.comparable(r) for r in table.scan().to_arrow().to_pylist()]
    theirs = lakehouse.duckdb_rows(table.metadata_location)
    assert sorted(repr(sorted(r.items())) for r in mine) == sorted(
        repr(sorted(r.items())) for r in theirs
    )
    return sorted(mine, key=lambda r: r["id"])


def batch(*records: tuple[int, dict[str, Any]]) -> list[Line]:
    return [header("things", ["id"]), *(up(seq, data) for seq, data in records)]


def test_a_batch_already_loaded_is_not_loaded_again(lake: Destination) -> None:
    first = driver()
    assert first.load(lake, "things", [77], batch((1, {"id": 1}), (2, {"id": 2}))) == (2, 0)
    assert first.already_loaded(lake, [77, 78]) == {77}
    # Another process (nothing remembered): the table's snapshots say it is there.
    second = driver()
    assert second.already_loaded(lake, [77]) == set()
    assert second.load(lake, "things", [77], batch((1, {"id": 1}), (2, {"id": 2}))) == (0, 0)
    # A lease holding it with another batch (a race) is refused whole, to be retried; the
    # next lease skips the one committed.
    with pytest.raises(TransientError, match="committed concurrently"):
        second.load(lake, "things", [77, 79], batch((3, {"id": 3})), skip_loaded=False)
    assert second.already_loaded(lake, [77, 79]) == {77}
    assert second.load(lake, "things", [77, 79], batch((3, {"id": 3}))) == (1, 0)
    assert [r["id"] for r in rows_of(lake, "things")] == [1, 2, 3]
    summaries = [s.summary.get(BATCH_IDS) for s in table_of(lake, "things").snapshots()]
    assert [s for s in summaries if s] == ["77", "79"]
    first.close()
    second.close()


def test_one_commit_per_lease(lake: Destination) -> None:
    d = driver()
    d.load(lake, "things", [1], batch((1, {"id": 1, "v": "a"})))
    before = table_of(lake, "things")
    lines = batch((2, {"id": 1, "v": "b"}), (3, {"id": 2, "v": "c"}), (4, {"id": 3, "v": "d"}))
    assert d.load(lake, "things", [2, 3, 4], lines) == (3, 0)
    after = table_of(lake, "things")
    # One metadata swap: the previous metadata file is the one before this lease.
    assert after.metadata.metadata_log[-1].metadata_file == before.metadata_location
    new = [
        s
        for s in after.snapshots()
        if s.snapshot_id not in {b.snapshot_id for b in before.snapshots()}
    ]
    assert new and {s.summary.get(BATCH_IDS) for s in new} == {"2,3,4"}
    assert [(r["id"], r["v"]) for r in rows_of(lake, "things")] == [(1, "b"), (2, "c"), (3, "d")]
    d.close()


@pytest.mark.parametrize("same_batch", [False, True], ids=["another_batch", "the_same_batch"])
def test_a_lost_commit_race_is_retried_and_never_loads_twice(
    lake: Destination, monkeypatch: pytest.MonkeyPatch, same_batch: bool
) -> None:
    """Another writer commits to the table between this load's plan and its commit: the commit
    fails (the catalog's compare-and-swap), the table is read again, and the load either applies
    itself anew on top (another batch) or finds its batch committed (the same one)."""
    ours, theirs = driver(), driver()
    ours.load(lake, "things", [1], batch((1, {"id": 1, "v": "a"})))
    raced = []

    def race(point: str) -> None:
        if point == "before_commit" and not raced:
            raced.append(point)
            other = [5] if same_batch else [6]
            lines = (
                batch((5, {"id": 2, "v": "x"})) if same_batch else batch((6, {"id": 1, "v": "z"}))
            )
            theirs.load(lake, "things", other, lines)

    monkeypatch.setattr(iceberg_warehouse.faults, "hit", race)
    written = ours.load(lake, "things", [5], batch((5, {"id": 2, "v": "x"})))
    assert raced
    got = [(r["id"], r["v"]) for r in rows_of(lake, "things")]
    if same_batch:
        assert written == (0, 0)  # the other loader committed it: not applied again
        assert got == [(1, "a"), (2, "x")]
    else:
        assert written == (1, 0)
        assert got == [(1, "z"), (2, "x")]
    summaries = [s.summary.get(BATCH_IDS) for s in table_of(lake, "things").snapshots()]
    assert sorted({s for s in summaries if s}) == (["1", "5"] if same_batch else ["1", "5", "6"])
    ours.close()
    theirs.close()


def test_a_table_another_engine_made_widens_int_and_float_in_place(lake: Destination) -> None:
    d = driver()
    session = d._session(lake)
    session.catalog.create_namespace_if_not_exists((lake.config["namespace"],))
    made = session.catalog.create_table(
        (lake.config["namespace"], "things"),
        schema=Schema(
            NestedField(1, "id", IntegerType(), required=False),
            NestedField(2, "score", FloatType(), required=False),
        ),
    )
    made.append(pa.Table.from_pylist([{"id": 1, "score": 0.5}], schema=made.schema().as_arrow()))
    assert d.load(lake, "things", [1], batch((1, {"id": 2**40, "score": 1e300}))) == (1, 0)
    table = table_of(lake, "things")
    types = {f.name: str(f.field_type) for f in table.schema().fields}
    assert (types["id"], types["score"]) == ("long", "double")
    got = [(r["id"], r["score"]) for r in rows_of(lake, "things")]
    assert got == [(1, 0.5), (2**40, 1e300)]
    d.close()
