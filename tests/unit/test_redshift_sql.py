"""The Redshift loader's SQL and staging files, without a server: every statement parses with
sqlglot's Redshift dialect, identifiers are quoted, values are parameters."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
import redshift_connector
import sqlglot
from sqlglot import exp

from common.control import ControlError
from services.control.destinations import settings_of as destination_settings
from services.loaders.core.errors import PermanentError, TransientError
from services.loaders.core.plan import PlanBuilder, Rejected
from services.loaders.core.shape import TableShape
from services.loaders.core.types import ColumnType as T
from services.loaders.redshift import errors, warehouse
from services.loaders.redshift import statements as S
from tests.conformance.cases import header
from tests.conformance.runner import to_events

HOSTILE = 'orders"; DROP TABLE users; --'


def parse(statement: str) -> exp.Expression:
    parsed = sqlglot.parse(statement.replace("%s", "'param'"), read="redshift")
    assert len(parsed) == 1 and parsed[0] is not None, statement
    return parsed[0]


def shape() -> TableShape:
    return TableShape(
        HOSTILE,
        columns={
            "id": T.BIGINT,
            "name": T.TEXT,
            "at": T.TIMESTAMP,
            "_sdc_sequence": T.BIGINT,
            "_sdc_table_version": T.BIGINT,
        },
    )


def test_names_follow_redshift_rules() -> None:
    assert S.RULES.column("id") == "id"
    assert S.RULES.column("Id") != S.RULES.column("id")  # folded names never collide
    long = S.RULES.column("x" * 200)
    assert len(long.encode()) == 115 and long == S.RULES.column("x" * 200)
    assert len(S.RULES.table("t" * 300).encode()) == 127
    assert S.RULES.column("naïve") == "naïve" and S.RULES.column("Naïve").startswith("naïve_")


def test_ddl_quotes_every_identifier_and_sizes_varchars() -> None:
    create = S.create_table("s", shape(), {"name": 3000})
    tree = parse(create)
    assert {c.name for c in tree.find_all(exp.ColumnDef)} == set(shape().columns)
    assert tree.find(exp.Table).name == HOSTILE  # one table, the hostile name intact
    assert "VARCHAR(4096)" in create and '"orders""; DROP TABLE users; --"' in create
    assert S.varchar_size(0) == 256 and S.varchar_size(70000) == 65535
    parse(S.add_column("s", HOSTILE, "new", T.TEXT, 10))
    parse(S.widen_varchar("s", HOSTILE, "name", 512))


def test_key_comment_is_a_quoted_literal() -> None:
    statement = S.set_keys("s", HOSTILE, ["it's", "id"])
    tree = parse(statement)
    assert isinstance(tree, exp.Comment)
    comment = tree.expression.this
    assert S.keys_of(comment) == ("it's", "id")
    assert S.keys_of("not json") == () and S.keys_of(None) == ()


def test_merge_goes_through_staging_tables_without_on_conflict() -> None:
    keys = ["id"]
    columns = ["id", "name", "_sdc_sequence"]
    for statement in [
        S.dedupe("win", "stg", columns, keys),
        S.winners("won", "win", "s", HOSTILE, keys, upsert=True),
        S.delete_written("s", HOSTILE, "won", [("id", "id")]),
        S.insert_winners("s", HOSTILE, "win", "won", columns, keys),
        S.insert_children("s", HOSTILE + "__lines", "stg_c0", "win", "won", ["sku"], keys),
        S.activate("s", HOSTILE),
        S.lock("s", HOSTILE),
        S.bad_keys("s", HOSTILE, ["id", "name"]),
        S.fill_primary_key("s", HOSTILE, "__sdc_primary_key"),
    ]:
        parse(statement)
        assert "ON CONFLICT" not in statement.upper()
    dedupe = S.dedupe("win", "stg", columns, keys)
    assert 'ROW_NUMBER() OVER (PARTITION BY "id" ORDER BY "_sdc_sequence" DESC' in dedupe
    upsert = S.winners("won", "win", "s", "t", keys, upsert=True)
    append = S.winners("won", "win", "s", "t", keys, upsert=False)
    assert '"_sdc_sequence" <= w."_sdc_sequence"' in upsert
    assert "_sdc_sequence" not in append  # append-only: only keys not seen yet


def test_copy_reads_gzip_json_through_jsonpaths_with_quoted_credentials() -> None:
    auth = S.copy_auth({"iam_role": "arn:aws:iam::1:role/x'y", "s3_region": "eu-west-1"}, {})
    statement = S.copy_json("stg", ["id", "name"], "s3://b/k.json.gz", "s3://b/k.jsonpaths", auth)
    assert "FORMAT AS JSON 's3://b/k.jsonpaths' GZIP" in statement
    literals = [lit.this for lit in parse(statement).find_all(exp.Literal)]
    assert "arn:aws:iam::1:role/x'y" in literals  # quoted by sqlglot's Redshift rules
    assert "REGION 'eu-west-1'" in statement
    keys = S.copy_auth({"aws_access_key_id": "AK"}, {"aws_secret_access_key": "SK"})
    assert keys == "ACCESS_KEY_ID 'AK' SECRET_ACCESS_KEY 'SK'"
    assert json.loads(S.jsonpaths(3)) == {"jsonpaths": ["$[0]", "$[1]", "$[2]"]}


def test_staged_rows_are_json_arrays_with_nulls_and_exact_values(tmp_path: Path) -> None:
    schema = {"properties": {"at": {"type": "string", "format": "date-time"}}}
    head = header("t", ["id"], schema)
    records = [
        {"id": 1, "s": 'a,"b"\n,', "f": 1.5, "ok": True, "at": "2026-01-02T03:04:05+02:00"},
        {"id": 2, "s": "", "big": 2**70},
    ]
    lines = [head, *({"action": "upsert", "sequence": i, "data": r} for i, r in enumerate(records))]
    builder = PlanBuilder("t", S.RULES, warehouse.render, {})
    for event in to_events(lines):
        builder.feed(event)
    staged = builder.segments[0].root
    out = warehouse.json_lines(staged, str(tmp_path / "rows.json.gz"))
    rows = [json.loads(line) for line in gzip.decompress(Path(out.path).read_bytes()).splitlines()]
    got = [dict(zip(staged.order, row, strict=True)) for row in rows]
    assert got[0]["s"] == 'a,"b"\n,' and got[0]["f"] == 1.5 and got[0]["ok"] is True
    assert got[0]["at"] == "2026-01-02 01:04:05+00:00"
    assert got[1]["s"] == "" and got[1]["big"] == 2**70 and got[1]["f"] is None
    assert out.lengths["s"] >= len('a,"b"\n,')
    builder.close()


def test_values_redshift_cannot_hold_are_rejected() -> None:
    with pytest.raises(Rejected):
        warehouse.render(T.TEXT, "x" * 65536)
    with pytest.raises(Rejected):
        warehouse.render(T.NUMERIC, 10**40)


def test_errors_are_classified_by_sqlstate() -> None:
    def error(code: str, message: str = "m") -> redshift_connector.ProgrammingError:
        return redshift_connector.ProgrammingError({"C": code, "M": message})

    assert isinstance(errors.classify(error("40001")), TransientError)
    assert isinstance(errors.classify(error("42501")), TransientError)
    assert isinstance(
        errors.classify(error("XX000", "S3ServiceException:Access Denied")), TransientError
    )
    assert isinstance(errors.classify(error("42601")), PermanentError)
    assert isinstance(errors.classify(redshift_connector.InterfaceError("down")), TransientError)


def test_a_destination_is_checked_when_it_is_set() -> None:
    dsn = "postgresql://loader@rs.example:5439/dev"
    ok = {"s3_bucket": "b", "iam_role": "arn:aws:iam::1:role/r"}
    config, _ = destination_settings("redshift", dsn=dsn, schema=None, settings=ok,
                                     password="pw", secrets={})  # fmt: skip
    assert config["s3_bucket"] == "b"
    with pytest.raises(ControlError, match="s3_bucket"):
        destination_settings("redshift", dsn=dsn, schema=None, settings={"iam_role": "r"},
                             password="pw", secrets={})  # fmt: skip
    with pytest.raises(ControlError, match="iam_role"):
        destination_settings("redshift", dsn=dsn, schema=None, settings={"s3_bucket": "b"},
                             password="pw", secrets={})  # fmt: skip
    keys = {"s3_bucket": "b", "aws_access_key_id": "AK"}
    destination_settings("redshift", dsn=dsn, schema=None, settings=keys, password="pw",
                         secrets={"aws_secret_access_key": "SK"})  # fmt: skip
