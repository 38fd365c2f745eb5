"""Table maintenance (``skein lake compact`` / ``expire``'s domain functions) on a table the
loader wrote: fewer files, and the same rows through pyiceberg and DuckDB."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.loaders.core.protocol import Destination
from services.loaders.iceberg import maintenance
from services.loaders.iceberg.loader import IcebergWarehouse
from support import lakehouse
from tests.conformance.cases import header, up
from tests.integration.conformance_support import ThroughProtocol


@pytest.fixture
def loaded() -> Iterator[tuple[ThroughProtocol[Any], Destination]]:
    """A table the loader wrote in six leases (six commits, six small files at least)."""
    lakehouse.ensure_lakehouse()
    run = uuid.uuid4().hex[:6]
    destination = lakehouse.destination(f"maint_{run}", f"lake-tests/{run}")
    driver = ThroughProtocol(IcebergWarehouse(connect_timeout_s=5, request_timeout_s=60))
    for n in range(1, 7):
        lines = [header("events", ["id"]), up(n, {"id": n, "v": f"v{n}"})]
        driver.load(destination, "events", [n], lines)
    yield driver, destination
    driver.close()
    lakehouse.drop_namespace(destination)


def snapshot_rows(driver: ThroughProtocol[Any], destination: Destination) -> list[Any]:
    table = maintenance.tables_of(driver._session(destination), "events")[0]
    mine = sorted(r["id"] for r in table.scan().to_arrow().to_pylist())
    assert mine == sorted(r["id"] for r in lakehouse.duckdb_rows(table.metadata_location))
    return mine


def test_compact_rewrites_small_files_and_keeps_every_row(
    loaded: tuple[ThroughProtocol[Any], Destination],
) -> None:
    driver, destination = loaded
    session = driver._session(destination)
    (table,) = maintenance.tables_of(session, "events")
    report = maintenance.compact(table)
    assert report["files"] >= 6 and report["rewritten"] == report["files"]
    assert report["written"] == 1 and report["rows"] == 6
    (after,) = maintenance.tables_of(session, "events")
    assert len(list(after.scan().plan_files())) == 1
    assert snapshot_rows(driver, destination) == [1, 2, 3, 4, 5, 6]
    # The loader goes on after it (its next commit is on top of the compacted table).
    driver.load(destination, "events", [7], [header("events", ["id"]), up(7, {"id": 1, "v": "x"})])
    assert snapshot_rows(driver, destination) == [1, 2, 3, 4, 5, 6]


def test_expire_drops_old_snapshots_but_never_the_current_one(
    loaded: tuple[ThroughProtocol[Any], Destination],
) -> None:
    driver, destination = loaded
    session = driver._session(destination)
    (table,) = maintenance.tables_of(session, "events")
    with pytest.raises(ValueError, match="at least 1"):
        maintenance.expire(table, 0)
    assert maintenance.expire(table, 1)["expired"] == 0  # all younger than a day
    later = datetime.now(UTC) + timedelta(days=2)
    report = maintenance.expire(table, 1, now=later)
    assert report["expired"] == report["snapshots"] - 1
    assert snapshot_rows(driver, destination) == [1, 2, 3, 4, 5, 6]
