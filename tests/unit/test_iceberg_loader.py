"""The Iceberg loader's pure parts: its destination's check, the endpoints the network policy
vets, types and schemas, the snapshot summary, row filters, the merge, and its verdicts."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from pyiceberg.exceptions import CommitFailedException
from pyiceberg.expressions import And, EqualTo, In, Or
from pyiceberg.schema import Schema
from pyiceberg.types import (
    DateType,
    FloatType,
    IntegerType,
    ListType,
    LongType,
    NestedField,
    StringType,
    StructType,
)

from common import control, netpolicy
from common.netpolicy import DestinationRefused
from common.settings import SharedSettings
from common.wire import Header
from services.control import destinations
from services.loaders import registry
from services.loaders.core.errors import PermanentError, TransientError
from services.loaders.core.reader import Record
from services.loaders.core.types import ColumnType
from services.loaders.iceberg import connection, errors, staging, statements
from services.loaders.iceberg.destination import DestinationError, SqlCatalog, target_of

SQL = {
    "dsn_params": {"host": "lake.example.com", "port": 5432, "dbname": "lakehouse", "user": "u"},
    "warehouse": "s3://lake-bucket/prefix",
    "aws_access_key_id": "AKIA1",
}
SECRETS = {"password": "pw", "aws_secret_access_key": "s3cret"}


# -- destination -------------------------------------------------------------------------------


def test_a_sql_catalog_destination_reads_as_its_target() -> None:
    target = target_of(SQL, SECRETS, 7)
    assert isinstance(target.catalog, SqlCatalog)
    assert target.catalog.password == "pw"
    assert (target.warehouse, target.namespace) == ("s3://lake-bucket/prefix", "skein_7")
    assert (target.access_key_id, target.secret_access_key) == ("AKIA1", "s3cret")
    assert target_of({**SQL, "schema": "raw"}, SECRETS, 7).namespace == "raw"
    registry.get("iceberg").check(SQL, SECRETS)


def test_a_rest_catalog_destination() -> None:
    config = {k: v for k, v in SQL.items() if k != "dsn_params"}
    target = target_of(
        {**config, "catalog_uri": "https://catalog.example.com/"},
        {"catalog_token": "t"} | SECRETS,
        1,
    )
    assert target.catalog.__class__.__name__ == "RestCatalog"
    assert getattr(target.catalog, "uri", None) == "https://catalog.example.com"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"dsn_params": None}, "needs one catalog"),
        ({"catalog_uri": "https://c.example.com"}, "needs one catalog"),
        ({"warehouse": "https://bucket/x"}, "must be s3://BUCKET"),
        ({"warehouse": None}, "must be s3://BUCKET"),
        ({"aws_access_key_id": None}, "own S3 key pair"),
        ({"namespace": "no spaces"}, "namespace"),
        ({"s3_endpoint": "ftp://x"}, "s3_endpoint"),
        ({"namespace": "a", "schema": "b"}, "namespace once"),
    ],
)
def test_a_destination_that_cannot_work_is_refused_saying_why(
    change: dict[str, Any], message: str
) -> None:
    config = {k: v for k, v in {**SQL, **change}.items() if v is not None}
    with pytest.raises(DestinationError, match=message):
        target_of(config, SECRETS, 1)
    with pytest.raises(control.ControlError, match=message):
        registry.get("iceberg").check(config, SECRETS)


def test_secrets_are_never_plain_settings_and_unknown_ones_are_refused() -> None:
    kind = registry.get("iceberg")
    with pytest.raises(control.ControlError, match="must be given as a secret"):
        kind.check({**SQL, "aws_secret_access_key": "x"}, {"password": "pw"})
    with pytest.raises(control.ControlError, match="unknown iceberg setting 'bucket'"):
        kind.check({**SQL, "bucket": "b"}, SECRETS)


def test_the_policy_vets_the_catalog_database_and_both_endpoints() -> None:
    def resolve(host: str, port: int) -> list[str]:
        return {"lake.example.com": ["34.120.0.10"], "s3.example.com": ["34.120.0.11"]}.get(
            host, [host]
        )

    strict = netpolicy.from_settings(SharedSettings(SKEIN_DESTINATION_ALLOWED_NETWORKS=""), resolve)
    assert list(netpolicy.destination_endpoints("iceberg", SQL)) == [
        ("hostport", ("lake.example.com", 5432, "lakehouse"))
    ]
    vetted = netpolicy.check_destination(
        strict, "iceberg", {**SQL, "s3_endpoint": "https://s3.example.com"}
    )
    assert vetted == {"lake.example.com": ["34.120.0.10"]}
    for config in (
        {**SQL, "dsn_params": {"host": "10.0.0.5"}},  # a private catalog host
        {**SQL, "s3_endpoint": "http://s3.example.com"},  # plain text, not listed
        {**SQL, "s3_endpoint": "https://169.254.169.254"},
        {"catalog_uri": "http://127.0.0.1:8181", "warehouse": "s3://b/p"},
        {**SQL, "dsn_params": {"host": "127.0.0.1", "port": 5432, "dbname": "skein"}},
    ):
        with pytest.raises(DestinationRefused):
            netpolicy.check_destination(strict, "iceberg", config)


def test_the_platform_s3_takes_only_the_buckets_an_operator_listed_never_the_batch_one() -> None:
    def resolve(host: str, port: int) -> list[str]:
        return {"lake.example.com": ["34.120.0.10"], "localhost": ["127.0.0.1"]}.get(host, [host])

    def policy(buckets: str) -> netpolicy.NetworkPolicy:
        settings = SharedSettings(
            SKEIN_DESTINATION_ALLOWED_NETWORKS="",
            SKEIN_DESTINATION_PLATFORM_S3_BUCKETS=buckets,
            SKEIN_S3_ENDPOINT="http://127.0.0.1:8333",
            SKEIN_S3_BUCKET="skein",
        )
        return netpolicy.from_settings(settings, resolve)

    on_platform = {**SQL, "s3_endpoint": "http://localhost:8333", "warehouse": "s3://lake/t"}
    # listed: the platform's S3 (loopback, plain text, in no allow-list) is reached for it
    assert netpolicy.check_destination(policy("lake, other"), "iceberg", on_platform)
    refusals = [
        ("", on_platform, "bucket 'lake' is not one of .*PLATFORM_S3_BUCKETS .*\\(none\\)"),
        ("lake", {**on_platform, "warehouse": "s3://other/t"}, "'other' is not one of"),
        ("lake", {**on_platform, "warehouse": "s3://skein/lake"}, "platform's batch bucket"),
        # only an Iceberg destination's data files; the platform's other services stay refused
        ("lake", {**on_platform, "s3_endpoint": "http://127.0.0.1:8081"}, "platform's spool"),
    ]
    for buckets, config, message in refusals:
        with pytest.raises(DestinationRefused, match=message):
            netpolicy.check_destination(policy(buckets), "iceberg", config)
    redshift = {"dsn_params": {"host": "lake.example.com"}, "s3_endpoint": "http://127.0.0.1:8333"}
    with pytest.raises(DestinationRefused, match="platform's S3 endpoint; a client destination"):
        netpolicy.check_destination(policy("lake"), "redshift", redshift)


def test_the_batch_bucket_can_never_be_a_destinations_platform_bucket() -> None:
    with pytest.raises(ValueError, match="'skein', the platform's batch bucket"):
        SharedSettings(SKEIN_S3_BUCKET="skein", SKEIN_DESTINATION_PLATFORM_S3_BUCKETS="lake,skein")
    settings = SharedSettings(SKEIN_S3_BUCKET="batches", SKEIN_DESTINATION_PLATFORM_S3_BUCKETS="")
    assert settings.destination_platform_s3_buckets == frozenset()


def test_a_rest_catalog_destination_is_set_without_a_dsn() -> None:
    config, secrets = destinations.settings_of(
        "iceberg",
        dsn=None,
        schema="raw",
        settings={
            "catalog_uri": "https://catalog.example.com/api",
            "warehouse": "s3://lake-bucket/p",
            "aws_access_key_id": "AKIA1",
        },
        password=None,
        secrets={"aws_secret_access_key": "s", "catalog_token": "t"},
    )
    assert "dsn_params" not in config and config["catalog_uri"].startswith("https://")
    assert secrets == {"aws_secret_access_key": "s", "catalog_token": "t"}
    with pytest.raises(control.ControlError, match="needs --dsn or --set catalog_uri"):
        destinations.settings_of(
            "iceberg", dsn=None, schema=None, settings={"warehouse": "s3://b/p"}, password=None,
            secrets={},
        )  # fmt: skip


def test_the_sql_catalog_connects_to_the_vetted_address_with_the_client_password() -> None:
    target = target_of(
        {**SQL, "dsn_params": {**SQL["dsn_params"], "sslmode": "require"}}, SECRETS, 1
    )
    assert isinstance(target.catalog, SqlCatalog)
    url = connection.sql_url(target.catalog, {"lake.example.com": "34.120.0.10"}, 10)
    assert (url.host, url.port, url.database, url.username) == (
        "lake.example.com",
        5432,
        "lakehouse",
        "u",
    )
    assert url.password == "pw"
    assert url.query["hostaddr"] == "34.120.0.10"
    assert url.query["sslmode"] == "require"
    assert url.query["connect_timeout"] == "10"
    props = connection.properties(target, 10, 60)
    assert props["s3.access-key-id"] == "AKIA1"
    assert "s3.endpoint" not in props  # AWS's own


# -- types and schemas -------------------------------------------------------------------------


def _plan(lines: list[Header | Record], schema: Any = None) -> tuple[Any, staging.Staged]:
    from services.loaders.bigquery.schema import TableSchema

    plan = staging.lease_plan("t", schema or TableSchema("t"))
    try:
        for event in lines:
            plan.feed(event)
        return plan, staging.read_back(plan, datetime(2026, 1, 1, tzinfo=UTC))
    finally:
        plan.close()


AT = {"properties": {"at": {"type": "string", "format": "date-time"}}}


def header(keys: tuple[str, ...] = ("id",), schema: dict[str, Any] | None = None) -> Header:
    return Header(1, "t", keys, schema, None, "2026-11-26T10:00:00.000000Z", "r", "push")


def up(sequence: int, data: dict[str, Any]) -> Record:
    return Record("upsert", sequence, data, None, b"{}")


def test_nesting_becomes_structs_and_lists_and_values_are_typed_for_arrow() -> None:
    plan, staged = _plan(
        [
            header(schema=AT),
            up(
                1,
                {
                    "id": 1,
                    "at": "2026-01-02T03:04:05Z",
                    "big": 2**70,
                    "address": {"city": "Oslo"},
                    "lines": [{"sku": "a", "qty": 1}],
                    "tags": ["x"],
                },
            ),
        ]
    )
    schema = statements.iceberg_schema(plan.schema, None)
    types = {f.name: f.field_type for f in schema.fields}
    assert isinstance(types["address"], StructType)
    assert isinstance(types["lines"], ListType)
    assert isinstance(types["lines"].element_type, StructType)
    assert isinstance(types["tags"], ListType)
    assert types["tags"].element_type == StringType()
    assert str(types["big"]) == "decimal(38, 0)"
    assert str(types["at"]) == "timestamptz"
    assert all(not f.required for f in schema.fields)
    (row,) = staged.segments[0]
    assert row["at"] == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert row["big"] == Decimal(2**70)
    assert row["address"] == {"city": "Oslo"}
    assert row["_sdc_batched_at"] == datetime(2026, 1, 1, tzinfo=UTC)


def test_records_iceberg_cannot_hold_are_rejected() -> None:
    plan, staged = _plan(
        [header(), up(1, {"id": 1, "n": 10**40}), up(2, {"id": 2, "s": "a\x00b"}), up(3, {"id": 3})]
    )
    assert plan.rejected == 2
    assert [reason for _, reason in staged.rejected] == [
        "an integer of more than 38 digits",
        "a string holds a NUL character",
    ]
    assert [r["id"] for r in staged.segments[0]] == [3]


def test_a_table_another_engine_made_keeps_its_columns_and_widens_int_and_float() -> None:
    stored = Schema(
        NestedField(1, "id", IntegerType(), required=False),
        NestedField(2, "score", FloatType(), required=False),
        NestedField(3, "day", DateType(), required=False),
        NestedField(4, "name", StringType(), required=False),
    )
    fields = statements.fields_of("t", stored)
    assert fields.fields["id"].kind is ColumnType.BIGINT
    assert fields.fields["day"].kind is ColumnType.VARIANT
    plan, staged = _plan([header(), up(1, {"id": 1, "score": 2, "day": "monday"})], fields)
    wanted = {f.name: f.field_type for f in statements.iceberg_schema(plan.schema, stored).fields}
    assert wanted["id"] == LongType()
    assert str(wanted["score"]) == "double"
    assert wanted["day"] == DateType()  # left alone ...
    assert staged.segments[0][0]["day__st"] == "monday"  # ... the value split off


# -- exactly once ------------------------------------------------------------------------------


@dataclass
class FakeSnapshot:
    summary: dict[str, str]


@dataclass
class FakeMetadata:
    snapshots: list[FakeSnapshot]


def test_the_batch_ids_of_a_commit_are_found_in_its_snapshots() -> None:
    summary = statements.summary([11, 12], "lease-1")
    assert summary == {"skein.batch-ids": "11,12", "skein.lease": "lease-1"}
    metadata: Any = FakeMetadata([FakeSnapshot({}), FakeSnapshot(summary)])
    assert statements.committed(metadata, [12, 13]) == {12}
    assert statements.committed(metadata, [112]) == set()


# -- filters and merge -------------------------------------------------------------------------


def test_key_filters() -> None:
    assert statements.key_filter(("id",), [(1,)]) == EqualTo(term="id", value=1)
    assert isinstance(statements.key_filter(("id",), [(1,), (2,)]), In)
    when = datetime(2026, 1, 1, tzinfo=UTC)
    assert statements.key_filter(("at",), [(when,)]) == EqualTo(term="at", value=when.isoformat())
    many = statements.key_filter(("a", "b"), [(i, str(i)) for i in range(2000)])
    assert isinstance(many, Or)

    def depth(e: Any) -> int:
        if isinstance(e, Or | And):
            return 1 + max(depth(e.left), depth(e.right))
        return 0

    assert depth(many) < 20  # balanced: a left-deep tree would be 2,000 deep


def test_the_greatest_sequence_wins_and_a_tie_goes_to_the_later_record() -> None:
    rows = [
        {"id": 1, "_sdc_sequence": 5, "v": "a"},
        {"id": 1, "_sdc_sequence": 3, "v": "older"},
        {"id": 2, "_sdc_sequence": 7, "v": "b"},
        {"id": 2, "_sdc_sequence": 7, "v": "tie, later"},
    ]
    latest = statements.latest(rows, ("id",))
    assert {k: r["v"] for k, r in latest.items()} == {(1,): "a", (2,): "tie, later"}
    stored = statements.stored_sequences(
        [{"id": 1, "_sdc_sequence": 9}, {"id": 2, "_sdc_sequence": 7}], ("id",)
    )
    won = statements.winners(latest, stored, append_only=False)
    assert [r["v"] for r in won] == ["tie, later"]  # 1 lost to the stored 9


def test_append_only_tables_gain_only_new_keys() -> None:
    key = ("__sdc_primary_key",)
    rows = [{"__sdc_primary_key": "k1", "_sdc_sequence": 1}, {"__sdc_primary_key": "k2"}]
    latest = statements.latest(rows, key)
    won = statements.winners(latest, {("k1",): 1}, append_only=True)
    assert [r["__sdc_primary_key"] for r in won] == ["k2"]


def test_rekeying_needs_unique_complete_keys() -> None:
    assert statements.rekey_problem([{"a": 1}, {"a": 2}], ("a",)) is None
    assert statements.rekey_problem([{"a": 1}, {"a": 1}, {"a": None}], ("a",)) == (
        "1 duplicate and 1 null keys"
    )


def test_the_key_lives_in_the_table_properties() -> None:
    assert statements.key_of(statements.key_property(("id", "region"))) == ("id", "region")
    assert statements.key_of({}) is None


# -- verdicts ----------------------------------------------------------------------------------


def test_failures_are_sorted_into_transient_and_permanent() -> None:
    from sqlalchemy.exc import OperationalError, ProgrammingError

    assert isinstance(errors.classify(CommitFailedException("raced")), TransientError)
    assert isinstance(errors.classify(DestinationError("bad")), TransientError)
    assert isinstance(errors.classify(OperationalError("x", {}, Exception("down"))), TransientError)
    assert isinstance(errors.classify(ProgrammingError("x", {}, Exception("no"))), PermanentError)
    assert isinstance(errors.classify(OSError("s3 unreachable")), TransientError)
    assert isinstance(errors.classify(ValueError("bug")), PermanentError)
