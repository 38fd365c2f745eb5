"""The BigQuery loader's pure parts: names, destination settings, nested schema, plan, SQL."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
import sqlglot

from common.wire import Header, dumps
from services.loaders.bigquery import statements
from services.loaders.bigquery.destination import DestinationError, check, target_of
from services.loaders.bigquery.names import BigQueryNames
from services.loaders.bigquery.plan import REJECTED_SEGMENT, SEGMENT, LeasePlan
from services.loaders.bigquery.schema import Placer, TableSchema
from services.loaders.core.reader import Record

NAMES = BigQueryNames()


def test_names_follow_bigquery_rules_and_never_collide() -> None:
    assert NAMES.column("order_id") == "order_id"
    for source in ["Order ID", "naïve", "1st", "_TABLE_x", 'quo"te', "a" * 400]:
        name = NAMES.column(source)
        assert name.replace("_", "a").isalnum() and name.isascii() and name == name.lower()
        assert not name[0].isdigit() and not name.startswith("_table_")
        assert len(name) <= 296  # 300 less room for a split suffix
    assert NAMES.column("Name") != NAMES.column("name")
    assert NAMES.column("a b") != NAMES.column("a_b")
    assert NAMES.column("Name") == NAMES.column("Name")


def test_destination_settings() -> None:
    target = target_of(
        {"project": "acme-data", "schema": "raw", "api_endpoint": "http://127.0.0.1:9050/"},
        {"credentials_json": '{"type": "service_account"}'},
        7,
    )
    assert (target.project, target.dataset, target.api_endpoint) == (
        "acme-data",
        "raw",
        "http://127.0.0.1:9050",
    )
    assert target.credentials == {"type": "service_account"}
    assert target_of({"project": "p1"}, {}, 7).dataset == "skein_7"
    with pytest.raises(DestinationError, match="project"):
        target_of({}, {}, 7)
    with pytest.raises(DestinationError, match="dataset"):
        target_of({"project": "p", "dataset": "no-dashes"}, {}, 7)
    with pytest.raises(DestinationError, match="credentials_json"):
        target_of({"project": "p"}, {"credentials_json": "not json"}, 7)
    # only a service account's key: an external_account would make the loader (or the control
    # service testing it) read a file or call a URL the client names
    external = {
        "type": "external_account",
        "credential_source": {"file": "/proc/self/environ"},
        "token_url": "https://attacker.example/",
    }
    with pytest.raises(DestinationError, match="service account key"):
        target_of({"project": "p"}, {"credentials_json": json.dumps(external)}, 7)
    odd_uri = {"type": "service_account", "token_uri": "http://127.0.0.1:9/token"}
    with pytest.raises(DestinationError, match="token_uri"):
        target_of({"project": "p"}, {"credentials_json": json.dumps(odd_uri)}, 7)
    # an unknown key is refused when set (destination.Settings); one stored earlier is ignored
    assert target_of({"project": "p", "warehouse": "x"}, {}, 7).project == "p"
    with pytest.raises(ValueError, match="unknown bigquery setting 'warehouse'"):
        check({"project": "p", "warehouse": "x"}, {})


def place(records: list[dict[str, Any]]) -> tuple[TableSchema, list[dict[str, Any]]]:
    schema = TableSchema("t")
    placer = Placer(schema, NAMES)
    return schema, [placer.row(r, None) for r in records]


def test_nesting_is_kept_as_record_and_repeated_fields() -> None:
    schema, rows = place(
        [
            {
                "id": 1,
                "address": {"city": "Oslo", "geo": {"lat": 59.9}},
                "lines": [{"sku": "a", "qty": 1}],
                "tags": ["x", "y"],
                "grid": [[1, 2], [3]],
            }
        ]
    )
    api = {f["name"]: f for f in schema.api()}
    assert api["address"]["type"] == "RECORD" and api["address"]["mode"] == "NULLABLE"
    assert [f["name"] for f in api["address"]["fields"]] == ["city", "geo"]
    assert api["lines"]["type"] == "RECORD" and api["lines"]["mode"] == "REPEATED"
    assert api["tags"] == {"name": "tags", "type": "STRING", "mode": "REPEATED"}
    assert api["grid"]["fields"] == [{"name": "value", "type": "INTEGER", "mode": "REPEATED"}]
    assert rows[0]["grid"] == [{"value": [1, 2]}, {"value": [3]}]
    assert rows[0]["address"] == {"city": "Oslo", "geo": {"lat": 59.9}}


def test_type_changes_split_into_suffixed_siblings_and_keep_every_value() -> None:
    schema, rows = place(
        [
            {"v": 1, "n": {"x": 1}, "tags": ["a"]},
            {"v": "one", "n": {"x": True}, "tags": ["b", 2]},
            {"v": 2**70, "n": "flat now", "tags": "scalar"},
        ]
    )
    names = [f["name"] for f in schema.api()]
    assert names == ["v", "n", "tags", "v__st", "tags__it", "v__nu", "n__st", "tags__st"]
    assert rows[1] == {"v__st": "one", "n": {"x__bo": True}, "tags": ["b"], "tags__it": [2]}
    assert rows[2] == {"v__nu": str(2**70), "n__st": "flat now", "tags__st": "scalar"}
    _, rows = place([{"s": "x"}, {"s": {"an": "object"}}])
    assert rows[1] == {"s__st": '{"an":"object"}'}  # kept as JSON text


def events(lines: list[dict[str, Any]]) -> list[Header | Record]:
    out: list[Header | Record] = []
    for line in lines:
        raw = dumps(line)
        if "v" in line:
            out.append(Header.decode(raw))
        else:
            out.append(
                Record(
                    line["action"],
                    line["sequence"],
                    line.get("data"),
                    line.get("time_extracted"),
                    raw,
                )
            )
    return out


def header(keys: list[str], version: int | None = None) -> dict[str, Any]:
    return {
        "v": 1,
        "client_id": 1,
        "table_name": "t",
        "key_names": keys,
        "schema": None,
        "table_version": version,
        "received_at": "2026-11-26T10:00:00.000000Z",
        "request_id": "r",
        "source": "push",
    }


def test_plan_cuts_segments_and_stages_rejections_in_the_same_file() -> None:
    plan = LeasePlan("t", NAMES, TableSchema("t"))
    for event in events(
        [
            header(["id"], version=1),
            {"action": "upsert", "sequence": 1, "data": {"id": 1, "a": "x"}},
            {"action": "upsert", "sequence": 2, "data": {"a": "no key"}},
            {"action": "activate_version", "sequence": 3},
            header([]),
            {"action": "upsert", "sequence": 4, "data": {"b": 1}},
        ]
    ):
        plan.feed(event)
    plan.file.seek(0)
    rows = [orjson.loads(line) for line in plan.file]
    plan.close()
    assert [(s.number, s.key_columns, s.rows, s.activate_version) for s in plan.segments] == [
        (0, ("id",), 1, 1),
        (1, ("__sdc_primary_key",), 1, None),
    ]
    assert [r[SEGMENT] for r in rows] == [0, REJECTED_SEGMENT, 1]
    assert rows[1]["_sdc_rejected_reason"] == "missing key property id"
    assert rows[0]["_sdc_received_at"] == "2026-11-26 10:00:00.000000+00:00"
    assert len(rows[2]["__sdc_primary_key"]) == 36
    assert plan.rejected == 1 and plan.staged_rows == 3


def test_commit_is_one_transaction_of_quoted_identifiers_and_parameters() -> None:
    plan = LeasePlan("t", NAMES, TableSchema("t"))
    for event in events(
        [
            header(["id"]),
            {"action": "upsert", "sequence": 1, "data": {"id": 1, "a": "x"}},
            {"action": "activate_version", "sequence": 2},
            header(["id", "region"]),
            {"action": "upsert", "sequence": 3, "data": {"id": 1, "region": "eu"}},
        ]
    ):
        plan.feed(event)
    plan.close()
    sql = statements.commit(
        statements.Dataset("my-proj", "raw"), "t", "stg", plan.segments, ("id",), 0
    )
    parts = sql.split(";\n")
    assert parts[0] == "BEGIN TRANSACTION" and parts[-1] == "COMMIT TRANSACTION;"
    assert sum(p.startswith("MERGE") for p in parts) == 2
    assert sum(p.startswith("ASSERT") for p in parts) == 2  # re-key checks for the second key
    assert "`my-proj`.`raw`.`t`" in sql and "@batch_ids" in sql
    # Every MERGE parses as BigQuery SQL.
    for part in parts:
        if part.startswith(("MERGE", "DELETE", "INSERT")):
            assert sqlglot.parse_one(part.rstrip(";"), read="bigquery") is not None
    assert statements.quote("a`b\\c") == "`a\\`b\\\\c`"
    with pytest.raises(ValueError):
        statements.quote("a\nb")


class FakeJob:
    def __init__(self, job_id: str, error: Exception | None) -> None:
        self.job_id = job_id
        self.error = error
        self.state = "DONE"
        self.error_result = {"reason": "invalid"} if error else None

    def result(self, timeout: float | None = None) -> None:
        if self.error:
            raise self.error


class FakeClient:
    """Jobs by id, as BigQuery keeps them: inserting a taken id is a 409 Conflict."""

    def __init__(self, outcomes: dict[str, Exception | None]) -> None:
        self.jobs = {job_id: FakeJob(job_id, error) for job_id, error in outcomes.items()}
        self.submitted: list[str] = []

    def query(self, sql: str, job_id: str, **_: Any) -> FakeJob:
        from google.api_core.exceptions import Conflict

        if job_id in self.jobs:
            raise Conflict(f"Already Exists: Job {job_id}")
        self.submitted.append(job_id)
        self.jobs[job_id] = FakeJob(job_id, None)
        return self.jobs[job_id]

    def get_job(self, job_id: str, **_: Any) -> FakeJob:
        return self.jobs[job_id]


def fake_session(client: FakeClient) -> Any:
    from services.loaders.bigquery import warehouse

    target = target_of({"project": "p"}, {}, 1)
    return warehouse.Session(client, target, 1, 1)  # type: ignore[arg-type]


def test_commit_job_ids_run_a_commit_once_and_move_past_failed_attempts() -> None:
    from google.api_core.exceptions import BadRequest

    from services.loaders.bigquery import warehouse

    # Nothing before: the first id is ours.
    client = FakeClient({})
    warehouse.commit(fake_session(client), "sql", "b", [])
    assert client.submitted == ["b_0"]
    # Attempt 0 failed earlier (say, a transient error): attempt 1 runs.
    client = FakeClient({"b_0": BadRequest("failed")})
    warehouse.commit(fake_session(client), "sql", "b", [])
    assert client.submitted == ["b_1"]
    # Attempt 0 succeeded (another loader, or this one before a crash): never run again.
    client = FakeClient({"b_0": BadRequest("failed"), "b_1": None})
    with pytest.raises(warehouse.AlreadyLoaded):
        warehouse.commit(fake_session(client), "sql", "b", [])
    assert client.submitted == []


def test_classify_retries_what_may_pass_and_parks_what_cannot() -> None:
    from google.api_core import exceptions as gexc
    from requests.exceptions import ConnectionError as RequestsConnectionError

    from services.loaders.bigquery.errors import classify

    for transient in [
        gexc.ServiceUnavailable("down"),
        gexc.Forbidden("rateLimitExceeded"),
        gexc.NotFound("Not found: Dataset p:raw"),
        gexc.RetryError("deadline", RequestsConnectionError("refused")),
        RequestsConnectionError("refused"),
        DestinationError("a bigquery destination needs --set project="),
        gexc.BadRequest("Transaction is aborted due to concurrent update against table t"),
    ]:
        assert classify(transient).kind == "transient", transient
    for permanent in [gexc.BadRequest("Invalid value"), ValueError("bug")]:
        assert classify(permanent).kind == "permanent", permanent
