"""The loader conformance suite against Iceberg tables on the local stack: a SQL catalog in the
``lakehouse`` database of the demo-warehouse cluster, data files in the stack's S3, through the
real pyiceberg and pyarrow, driving the loader only through its ``Warehouse`` protocol.

Every expected row is read back twice: through pyiceberg, and independently through DuckDB's
Iceberg extension reading the table's metadata file (``support.lakehouse.duckdb_rows``); the
two must agree."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from pyiceberg.table import Table

from services.loaders.core.errors import PermanentError
from services.loaders.core.protocol import Destination
from services.loaders.core.system_columns import ROW, SOURCE_KEY
from services.loaders.iceberg.loader import IcebergWarehouse
from services.loaders.iceberg.staging import NAMES
from services.loaders.iceberg.tables import REJECTED
from support import lakehouse
from tests.conformance.cases import CASES, Case, Line
from tests.conformance.runner import case_params, run_case
from tests.integration.conformance_support import ThroughProtocol

# Nesting is kept as BigQuery keeps it (the same planner): objects are structs and arrays
# lists in the row, where the shared cases expect Stitch's de-nested columns and subtables; and
# Iceberg cannot widen a long column to a decimal, so an integer beyond 64 bits in a long
# column goes to a decimal(38, 0) sibling ``<column>__nu``. Each of these cases loads as the
# BigQuery expectation says: ``test_departures_load_as_bigquery_keeps_them``.
DEPARTURES = {
    "nested_objects": "nesting kept: a struct, not parent__child columns",
    "arrays_of_objects": "nesting kept: a list of structs in the row, not a subtable",
    "arrays_of_scalars_and_replaced_children": "nesting kept: a list in the row, not a subtable",
    "deep_nesting": "nesting kept: structs and lists (inner arrays wrapped as {value})",
    "big_integers_stay_exact": "long cannot widen to decimal in Iceberg: split to n__nu",
}


class IcebergHarness:
    warehouse = "iceberg"

    def __init__(self) -> None:
        self.run = uuid.uuid4().hex[:6]
        self.driver = ThroughProtocol(IcebergWarehouse(connect_timeout_s=5, request_timeout_s=60))
        self.namespaces: set[str] = set()

    def destination(self, namespace: str) -> Destination:
        self.namespaces.add(namespace)
        return lakehouse.destination(namespace, f"lake-tests/{self.run}")

    def namespace(self, case: Case) -> str:
        return f"conf_{self.run}_{case.name}"[:200]

    def load(self, case: Case, batch_id: int, lines: list[Line]) -> None:
        self.driver.load(self.destination(self.namespace(case)), case.table, [batch_id], lines)

    def table(self, namespace: str, name: str) -> Table:
        session = self.driver._session(self.destination(namespace))
        return session.catalog.load_table((namespace, name))

    def column(self, name: str) -> str:
        if name.startswith(("_sdc", SOURCE_KEY)) or name == "value" or name == ROW:
            return name
        return NAMES.column(name)

    def read(self, namespace: str, table: str, columns: list[str]) -> list[dict[str, Any]]:
        """The rows through pyiceberg, checked against DuckDB's reading of the same snapshot."""
        found = self.table(namespace, NAMES.table(table))
        mine = [
            {c: lakehouse.comparable(r.get(self.column(c))) for c in columns}
            for r in found.scan().to_arrow().to_pylist()
        ]
        theirs = [
            {c: r.get(self.column(c)) for c in columns}
            for r in lakehouse.duckdb_rows(found.metadata_location)
        ]
        assert _multiset(mine) == _multiset(theirs), ("pyiceberg and DuckDB differ", mine, theirs)
        return mine

    def rows(self, case: Case, table: str, columns: list[str]) -> list[dict[str, Any]]:
        return self.read(self.namespace(case), table, columns)

    def rejected(self, case: Case) -> int:
        return self.table(self.namespace(case), REJECTED).scan().to_arrow().num_rows

    def close(self) -> None:
        self.driver.close()
        for namespace in self.namespaces:
            lakehouse.drop_namespace(self.destination(namespace))


class AsBigQueryKeepsThem(IcebergHarness):
    """The same tables, expected as the shared cases expect BigQuery's nested ones."""

    warehouse = "bigquery"


def _multiset(rows: list[dict[str, Any]]) -> Counter[str]:
    import json

    return Counter(json.dumps(r, sort_keys=True, default=str) for r in rows)


@pytest.fixture(scope="module")
def harness() -> Iterator[IcebergHarness]:
    lakehouse.ensure_lakehouse()
    h = IcebergHarness()
    yield h
    h.close()


@pytest.mark.parametrize("case", case_params(xfail=DEPARTURES))
def test_conformance(harness: IcebergHarness, case: Case) -> None:
    run_case(harness, case, (PermanentError,))


@pytest.mark.parametrize("case", [c for c in CASES if c.name in DEPARTURES], ids=lambda c: c.name)
def test_departures_load_as_bigquery_keeps_them(case: Case) -> None:
    assert "bigquery" in case.per_warehouse
    lakehouse.ensure_lakehouse()
    h = AsBigQueryKeepsThem()
    try:
        run_case(h, case, (PermanentError,))
    finally:
        h.close()
