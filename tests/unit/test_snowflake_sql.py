"""The Snowflake loader's SQL and staging values, without a server: statements parse with
sqlglot's Snowflake dialect, names are upper case, values are parameters or staged data."""

from __future__ import annotations

import json

import pytest
import sqlglot
from snowflake.connector import errors as sf
from sqlglot import exp

from common.control import ControlError
from services.control.destinations import settings_of as destination_settings
from services.loaders.core.errors import PermanentError, TransientError
from services.loaders.core.plan import Rejected
from services.loaders.core.shape import TableShape, place
from services.loaders.core.types import ColumnType as T
from services.loaders.snowflake import errors
from services.loaders.snowflake import statements as S

HOSTILE = 'ORDERS"; DROP TABLE USERS; --'


def parse(statement: str) -> exp.Expression:
    parsed = sqlglot.parse(statement, read="snowflake")
    assert len(parsed) == 1 and parsed[0] is not None, statement
    return parsed[0]


def shape() -> TableShape:
    return TableShape(
        HOSTILE,
        columns={
            "ID": T.BIGINT,
            "ADDRESS": T.VARIANT,
            "_sdc_sequence": T.BIGINT,
            "_sdc_row": T.BIGINT,
        },
    )


def test_names_are_upper_case_and_splits_use_snowflake_suffixes() -> None:
    assert S.RULES.column("id") == "ID" and S.RULES.table("orders") == "ORDERS"
    assert (
        S.column("_sdc_sequence") == "_SDC_SEQUENCE"
        and S.planned("_SDC_SEQUENCE") == "_sdc_sequence"
    )
    table = TableShape("T", columns={"V": T.TEXT})
    assert place(table, S.RULES, "v", T.BIGINT) == "V__IT"
    assert place(table, S.RULES, "v", T.DOUBLE) == "V__FL"
    assert place(table, S.RULES, "v", T.VARIANT) == "V__VA"
    assert S.fold_schema("analytics") == "ANALYTICS" and S.fold_schema("MixedCase") == "MixedCase"


def test_merge_upserts_by_greatest_sequence_with_variant_parsed() -> None:
    statement = S.merge("S", shape(), "STG", ["ID", "ADDRESS", "_sdc_sequence"], ["ID"], True)
    tree = parse(statement)
    assert isinstance(tree, exp.Merge)
    assert tree.this.name == HOSTILE
    assert 'PARSE_JSON("ADDRESS")' in statement
    assert 'QUALIFY ROW_NUMBER() OVER (PARTITION BY "ID" ORDER BY "_SDC_SEQUENCE"' in statement
    assert (
        'WHEN MATCHED AND (t."_SDC_SEQUENCE" IS NULL OR t."_SDC_SEQUENCE" <= s."_SDC_SEQUENCE")'
        in statement
    )
    append = S.merge("S", shape(), "STG", ["ID"], ["ID"], False)
    assert "WHEN MATCHED" not in append and "WHEN NOT MATCHED THEN INSERT" in append


def test_every_statement_parses_and_quotes_identifiers() -> None:
    for statement in [
        S.create_table("S", shape()),
        *S.add_columns("S", shape()),
        S.create_staging("STG", ["ID", "ADDRESS", "_sdc_row"]),
        S.put("S", "/tmp/x.parquet", "stg_1"),
        S.copy_into("S", "STG", "stg_1"),
        S.duplicate_keys("S", HOSTILE, ["ID"]),
        S.fill_primary_key("S", HOSTILE, "__sdc_primary_key"),
        S.activate("S", HOSTILE),
        S.loaded("S", 3),
        S.read_keys("S"),
        *S.write_keys("S"),
        *S.metadata("S"),
        S.record_loads("S"),
        S.record_rejected("S"),
    ]:
        if not statement.startswith("PUT"):  # sqlglot has no PUT grammar
            parse(statement)
    assert '"ORDERS""; DROP TABLE USERS; --"' in S.create_table("S", shape())
    assert "MATCH_BY_COLUMN_NAME = CASE_SENSITIVE" in S.copy_into("S", "STG", "stg_1")


def test_staged_values() -> None:
    assert S.render(T.TEXT, 'say "hi"') == '"say ""hi"""'
    assert S.render(T.TEXT, "") == '""'  # enclosed: an empty string, not NULL
    assert json.loads(S.render(T.VARIANT, {"a": [1, 2**70]})[1:-1].replace('""', '"')) == {
        "a": [1, 2**70]
    }
    assert S.render(T.TIMESTAMP, "2026-01-02T03:04:05Z") == '"2026-01-02T03:04:05+00:00"'
    assert S.render(T.BIGINT, 2**70) == str(2**70)
    with pytest.raises(Rejected):
        S.render(T.NUMERIC, 10**40)
    assert S.keys_of(S.key_json(["id", "__sdc_primary_key"])) == ("id", "__sdc_primary_key")


def test_errors_are_classified() -> None:
    assert isinstance(errors.classify(sf.OperationalError(msg="down")), TransientError)
    assert isinstance(errors.classify(sf.ServiceUnavailableError(msg="503")), TransientError)
    refused = sf.ProgrammingError(msg="Incorrect username or password", errno=390100)
    assert isinstance(errors.classify(refused), TransientError)
    assert isinstance(errors.classify(sf.ProgrammingError(msg="bad", errno=1003)), PermanentError)


def test_a_destination_is_checked_when_it_is_set() -> None:
    config = {"account": "a", "user": "u", "database": "D"}
    destination_settings("snowflake", dsn=None, schema=None, settings=config, password="pw",
                         secrets={})  # fmt: skip
    with pytest.raises(ControlError, match="--set database"):
        destination_settings("snowflake", dsn=None, schema=None, settings={"account": "a",
                             "user": "u"}, password="pw", secrets={})  # fmt: skip
    with pytest.raises(ControlError, match="password=VAR or private_key"):
        destination_settings("snowflake", dsn=None, schema=None, settings=config, password=None,
                             secrets={})  # fmt: skip
    with pytest.raises(ControlError, match="not a usable PEM"):
        destination_settings("snowflake", dsn=None, schema=None, settings=config, password=None,
                             secrets={"private_key": "nope"})  # fmt: skip
