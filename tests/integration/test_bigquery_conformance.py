"""The loader conformance suite against goccy/bigquery-emulator, through the real
google-cloud-bigquery client (load jobs, MERGE in a transaction, schema updates), driving the
loader only through its ``Warehouse`` protocol."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import bigquery

from services.loaders.bigquery import statements
from services.loaders.bigquery.loader import BigQueryWarehouse
from services.loaders.bigquery.names import BigQueryNames
from services.loaders.core.errors import PermanentError, TransientError
from services.loaders.core.protocol import Destination
from support import bigquery_emulator
from tests.conformance.cases import CASES, Case, Line
from tests.conformance.runner import case_params, run_case
from tests.integration.conformance_support import ThroughProtocol

NAMES = BigQueryNames()
# The first test on a machine builds the emulator (~12 min on 2 cores; cached afterwards).
pytestmark = pytest.mark.timeout(1800)


class BigQueryHarness:
    warehouse = "bigquery"

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.run = uuid.uuid4().hex[:6]
        self.driver = ThroughProtocol(BigQueryWarehouse(request_timeout=30, job_timeout=120))
        # For reading back only.
        self.client = bigquery.Client(
            project=bigquery_emulator.PROJECT,
            credentials=AnonymousCredentials(),
            client_options=ClientOptions(api_endpoint=endpoint),
        )

    def destination(self, dataset: str) -> Destination:
        """A client's destination on the emulator, loading into ``dataset``."""
        config = {"project": bigquery_emulator.PROJECT, "schema": dataset}
        return Destination(1, "bigquery", {**config, "api_endpoint": self.endpoint}, {})

    def dataset(self, case: Case) -> str:
        return f"conf_{self.run}_{case.name}"

    def load_lines(self, dataset: str, table: str, batch_ids: list[int], lines: list[Line]) -> int:
        """Rows written by loading these batches, every id handed to ``load`` (whose own check
        skips batches already loaded and refuses a lease that raced another to them)."""
        destination = self.destination(dataset)
        rows, _ = self.driver.load(destination, table, batch_ids, lines, skip_loaded=False)
        return rows

    def load(self, case: Case, batch_id: int, lines: list[Line]) -> None:
        self.driver.load(self.destination(self.dataset(case)), case.table, [batch_id], lines)

    def select(self, sql: str) -> list[dict[str, Any]]:
        job = self.client.query(sql, job_retry=None)
        return [dict(row.items()) for row in job.result(timeout=60)]

    def rows(self, case: Case, table: str, columns: list[str]) -> list[dict[str, Any]]:
        dataset = self.dataset(case)
        target = statements.Dataset(bigquery_emulator.PROJECT, dataset).table(NAMES.table(table))
        # Qualified: a column named like its table (hostile_name_*) would otherwise read as
        # the table's whole row (a STRUCT).
        selected = ", ".join(
            f"_sdc_read.{statements.quote(NAMES.column(c))} AS {statements.quote(f'c{i}')}"
            for i, c in enumerate(columns)
        )
        got = self.select(f"SELECT {selected} FROM {target} AS _sdc_read")
        return [{c: row[f"c{i}"] for i, c in enumerate(columns)} for row in got]

    def rejected(self, case: Case) -> int:
        dataset = self.dataset(case)
        table = statements.Dataset(bigquery_emulator.PROJECT, dataset).table(statements.REJECTED)
        return int(self.select(f"SELECT COUNT(*) AS n FROM {table}")[0]["n"])


@pytest.fixture
def harness() -> Iterator[BigQueryHarness]:
    # A fresh emulator per case: its SQL analyzer (compiled to WebAssembly) keeps growing its
    # memory with every query and panics past 2 GiB, which a whole suite on one would reach.
    with bigquery_emulator.running() as endpoint:
        h = BigQueryHarness(endpoint)
        yield h
        h.driver.close()
        h.client.close()


# What goccy/bigquery-emulator v0.8.1 cannot show (checked against its source):
# - its JSON load job builds the loaded columns without their nested fields (server/handler.go)
#   and fills a RECORD from a Go map, in random field order: a RECORD whose fields have
#   different types loads scrambled ("ParseInt: parsing \"c\""); RECORDs of one field type load
#   (the e2e test's address{city}); a REPEATED RECORD holding a REPEATED field fails to load;
# - tables.patch and ALTER TABLE ADD COLUMN change only its metadata, never the stored table,
#   so a column added to an existing table is unknown to later queries.
EMULATOR_GAPS = {
    "nested_objects": "emulator loads RECORD{STRING, RECORD} in random field order",
    "arrays_of_objects": "emulator loads REPEATED RECORD{STRING, INTEGER} in random field order",
    "deep_nesting": "emulator cannot load REPEATED RECORD{value REPEATED INTEGER}",
    "type_change_splits_the_column": "emulator cannot add a column to an existing table",
    "schema_types_and_new_columns_mid_stream": "emulator cannot add a column to an existing table",
}


@pytest.mark.parametrize("case", case_params(skip=EMULATOR_GAPS))
def test_conformance(harness: BigQueryHarness, case: Case) -> None:
    run_case(harness, case, (PermanentError,))


def test_a_batch_already_loaded_is_not_loaded_again(harness: BigQueryHarness) -> None:
    """Exactly once: ids in _sdc_loads are skipped, and a commit of the same batches under a
    different lease is refused inside the transaction."""
    case = CASES[0]
    dataset = f"conf_{harness.run}_again"
    lines = case.batches[0]
    assert harness.load_lines(dataset, case.table, [77], lines) == 2
    assert harness.driver.already_loaded(harness.destination(dataset), [77, 78]) == {77}
    # Same batch again (as after a crash between commit and ack, with a new lease).
    assert harness.load_lines(dataset, case.table, [77], lines) == 0
    table = statements.Dataset(bigquery_emulator.PROJECT, dataset).table("flat")
    assert harness.select(f"SELECT COUNT(*) AS n FROM {table}")[0]["n"] == 2
    # A lease holding it with another batch (a race) is refused whole, to be retried.
    with pytest.raises(TransientError, match="committed concurrently"):
        harness.load_lines(dataset, case.table, [77, 79], lines)
    assert harness.select(f"SELECT COUNT(*) AS n FROM {table}")[0]["n"] == 2
    loads = statements.Dataset(bigquery_emulator.PROJECT, dataset).table(statements.LOADS)
    counted = harness.select(f"SELECT batch_id, job_id FROM {loads}")
    assert [r["batch_id"] for r in counted] == [77]
    assert counted[0]["job_id"].startswith("skein_1_")


def test_type_split_and_nesting_within_one_lease(harness: BigQueryHarness) -> None:
    """What the emulator can show of type splits and nesting: fields created by one load
    (it cannot add columns to an existing table, nor load RECORDs of mixed field types)."""
    dataset = f"conf_{harness.run}_one_lease"
    lines: list[Line] = [
        {
            "v": 1,
            "client_id": 1,
            "table_name": "mixed",
            "key_names": ["id"],
            "schema": None,
            "table_version": None,
            "received_at": "2026-11-26T10:00:00.000000Z",
            "request_id": "r",
            "source": "push",
        },
        {"action": "upsert", "sequence": 1, "data": {"id": 1, "v": 42, "tags": ["a", "b"]}},
        {"action": "upsert", "sequence": 2, "data": {"id": 2, "v": "x", "place": {"city": "Oslo"}}},
        {"action": "upsert", "sequence": 3, "data": {"id": 3, "v": {"an": "object"}, "tags": [7]}},
    ]
    assert harness.load_lines(dataset, "mixed", [1], lines) == 3
    table = statements.Dataset(bigquery_emulator.PROJECT, dataset).table("mixed")
    got = harness.select(f"SELECT id, v, v__st, tags, tags__it, place FROM {table} ORDER BY id")
    assert got == [
        {"id": 1, "v": 42, "v__st": None, "tags": ["a", "b"], "tags__it": [], "place": None},
        {"id": 2, "v": None, "v__st": "x", "tags": [], "tags__it": [], "place": {"city": "Oslo"}},
        {
            "id": 3,
            "v": None,
            "v__st": '{"an":"object"}',
            "tags": [],
            "tags__it": [7],
            "place": None,
        },
    ]
