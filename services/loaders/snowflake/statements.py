"""Snowflake SQL for one load, as pure functions over table shapes (unit-tested without a server).

Identifiers are always quoted (``sqlglot``'s quoting for the Snowflake dialect); every value is a
``?`` parameter bound by the server (the connector's ``qmark`` style), never SQL text. Names
follow Snowflake's convention: upper case (``RULES``), system columns too (``_SDC_SEQUENCE``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

import orjson
from sqlglot import exp

from services.loaders.core.names import NameRules
from services.loaders.core.plan import Rejected, aware_timestamp
from services.loaders.core.shape import TableShape
from services.loaders.core.system_columns import ROW, SEQUENCE, TABLE_VERSION
from services.loaders.core.types import ColumnType

# Snowflake identifiers: 255 characters; split suffixes __bo __de __fl __it __st __ti __va.
RULES = NameRules(
    max_bytes=255,
    case="upper",
    max_columns=10000,
    suffixes={ColumnType.BIGINT.value: "it", ColumnType.DOUBLE.value: "fl"},
)
SQL_TYPES = {
    ColumnType.BIGINT: "NUMBER(38,0)",
    ColumnType.NUMERIC: "NUMBER(38,0)",  # up to 38 digits: wider integers are rejected
    ColumnType.DOUBLE: "FLOAT",
    ColumnType.BOOLEAN: "BOOLEAN",
    ColumnType.TEXT: "VARCHAR",
    ColumnType.TIMESTAMP: "TIMESTAMP_TZ",
    ColumnType.VARIANT: "VARIANT",
}
FROM_SQL = {
    "NUMBER": ColumnType.BIGINT,
    "FLOAT": ColumnType.DOUBLE,
    "BOOLEAN": ColumnType.BOOLEAN,
    "TEXT": ColumnType.TEXT,
    "VARCHAR": ColumnType.TEXT,
    "TIMESTAMP_TZ": ColumnType.TIMESTAMP,
    "TIMESTAMP_LTZ": ColumnType.TIMESTAMP,
    "TIMESTAMP_NTZ": ColumnType.TIMESTAMP,
    "VARIANT": ColumnType.VARIANT,
    "OBJECT": ColumnType.VARIANT,
    "ARRAY": ColumnType.VARIANT,
}
LOADS = "_SDC_LOADS"
REJECTED = "_SDC_REJECTED"
TABLES = "_SDC_TABLES"  # each table's key columns
STAGE = "_SDC_STAGE"
BATCHED_AT = "_SDC_BATCHED_AT"
# Staging files are Parquet with one string column per staging column, matched by name: both
# Snowflake and fakesnow load that into an all-VARCHAR table without guessing types.
PARQUET_FORMAT = "TYPE = PARQUET"
_MAX_DIGITS = 38


def q(name: str) -> str:
    """A quoted Snowflake identifier."""
    return str(exp.to_identifier(name, quoted=True).sql(dialect="snowflake"))


def column(name: str) -> str:
    """The warehouse column of a planned column: system columns in Snowflake's upper case."""
    return name.upper() if name.lower().startswith(("_sdc", "__sdc")) else name


def planned(name: str) -> str:
    """The planned column of a warehouse column (the inverse of ``column``)."""
    return name.lower() if name.upper().startswith(("_SDC", "__SDC")) else name


def fold_schema(name: str) -> str:
    """A schema name as Snowflake would store it unquoted (upper case), unless it has capitals."""
    return name.upper() if name.upper().lower() == name else name


def render(kind: ColumnType, value: Any) -> str:
    """A value as a CSV field of the spill (converted to a Parquet string column for staging,
    cast in the MERGE). Text is always enclosed, so an unenclosed empty field means NULL."""
    if kind is ColumnType.TEXT:
        return _enclosed(str(value))
    if kind is ColumnType.TIMESTAMP:
        return _enclosed(aware_timestamp(value).isoformat())
    if kind is ColumnType.VARIANT:
        try:
            text = orjson.dumps(value).decode()
        except TypeError:  # integers beyond 64 bits
            text = json.dumps(value, separators=(",", ":"))
        return _enclosed(text)
    if kind is ColumnType.BOOLEAN:
        return "true" if value else "false"
    if kind is ColumnType.DOUBLE:
        return repr(float(value))
    text = str(int(value))
    if len(text.lstrip("-")) > _MAX_DIGITS:
        raise Rejected(f"integer {text} has more than {_MAX_DIGITS} digits (NUMBER(38,0))")
    return text


def _enclosed(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


def _cast(name: str, kind: ColumnType) -> str:
    ident = q(column(name))
    if kind is ColumnType.TEXT:
        return ident
    if kind is ColumnType.VARIANT:
        return f"PARSE_JSON({ident})"
    return f"{ident}::{SQL_TYPES[kind]}"


def _defs(shape: TableShape, columns: Iterable[str]) -> str:
    return ", ".join(f"{q(column(c))} {SQL_TYPES[shape.columns[c]]}" for c in columns)


def create_table(schema: str, shape: TableShape) -> str:
    return f"CREATE TABLE IF NOT EXISTS {q(schema)}.{q(shape.name)} ({_defs(shape, shape.columns)})"


def add_columns(schema: str, shape: TableShape) -> list[str]:
    table = f"{q(schema)}.{q(shape.name)}"
    return [
        f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {q(column(c))} {SQL_TYPES[kind]}"
        for c, kind in shape.added.items()
    ]


def read_keys(schema: str) -> str:
    return f"SELECT PRIMARY_KEYS FROM {q(schema)}.{q(TABLES)} WHERE TABLE_NAME = ?"


def write_keys(schema: str) -> list[str]:
    """Record a table's key columns (Snowflake does not enforce keys), in the load's
    transaction. Parameters: table, then table and the keys' JSON."""
    table = f"{q(schema)}.{q(TABLES)}"
    return [
        f"DELETE FROM {table} WHERE TABLE_NAME = ?",
        f"INSERT INTO {table} (TABLE_NAME, PRIMARY_KEYS) VALUES (?, ?)",
    ]


def key_json(keys: Sequence[str]) -> str:
    return json.dumps([column(k) for k in keys])


def keys_of(stored: str | None) -> tuple[str, ...]:
    try:
        found = json.loads(stored or "")
    except ValueError:
        return ()
    return tuple(planned(str(k)) for k in found) if isinstance(found, list) else ()


def duplicate_keys(schema: str, table: str, keys: Sequence[str]) -> str:
    """How many key groups would break ``keys`` as a key: duplicates or nulls."""
    cols = ", ".join(q(column(k)) for k in keys)
    nulls = " OR ".join(f"{q(column(k))} IS NULL" for k in keys)
    return (
        f"SELECT (SELECT COUNT(*) FROM (SELECT {cols} FROM {q(schema)}.{q(table)} "
        f"GROUP BY {cols} HAVING COUNT(*) > 1)) + "
        f"(SELECT COUNT(*) FROM {q(schema)}.{q(table)} WHERE {nulls})"
    )


def fill_primary_key(schema: str, table: str, key: str) -> str:
    return (
        f"UPDATE {q(schema)}.{q(table)} SET {q(column(key))} = UUID_STRING() "
        f"WHERE {q(column(key))} IS NULL"
    )


def use(schema: str) -> str:
    """Staging tables are named without a schema: they live in the session's current one."""
    return f"USE SCHEMA {q(schema)}"


def create_staging(name: str, order: Sequence[str]) -> str:
    """A transient table (no fail-safe storage), dropped after the load; a temporary one would
    do in Snowflake, but fakesnow's COPY ... MATCH_BY_COLUMN_NAME cannot see those."""
    defs = ", ".join(f"{q(column(c))} VARCHAR" for c in order)
    return f"CREATE TRANSIENT TABLE {q(name)} ({defs})"


def put(schema: str, path: str, prefix: str) -> str:
    # A local temp file path and a prefix we made: neither comes from a client.
    return (
        f"PUT 'file://{path}' @{q(schema)}.{q(STAGE)}/{prefix} "
        "AUTO_COMPRESS = FALSE OVERWRITE = TRUE"
    )


def copy_into(schema: str, name: str, prefix: str) -> str:
    return (
        f"COPY INTO {q(name)} FROM @{q(schema)}.{q(STAGE)}/{prefix} "
        f"FILE_FORMAT = ({PARQUET_FORMAT}) MATCH_BY_COLUMN_NAME = CASE_SENSITIVE PURGE = TRUE"
    )


def drop_staging(name: str) -> str:
    return f"DROP TABLE IF EXISTS {q(name)}"


def merge(
    schema: str,
    shape: TableShape,
    staging: str,
    columns: Sequence[str],
    keys: Sequence[str],
    upsert: bool,
) -> str:
    """One MERGE of a segment's rows: per key the greatest sequence (ties: the later row) wins,
    and an older sequence arriving late never overwrites. Append-only: insert new keys only.
    No parameters (fakesnow splits a MERGE into several statements and loses them)."""
    selected = ", ".join(f"{_cast(c, shape.columns[c])} AS {q(column(c))}" for c in columns)
    partition = ", ".join(q(column(k)) for k in keys)
    source = (
        f"SELECT {selected} FROM {q(staging)} QUALIFY ROW_NUMBER() OVER (PARTITION BY {partition} "
        f"ORDER BY {q(column(SEQUENCE))}::NUMBER(38,0) DESC, "
        f"{q(column(ROW))}::NUMBER(38,0) DESC) = 1"
    )
    on = " AND ".join(f"t.{q(column(k))} = s.{q(column(k))}" for k in keys)
    targets = ", ".join(q(column(c)) for c in [*columns, BATCHED_AT])
    values = ", ".join([*(f"s.{q(column(c))}" for c in columns), "CURRENT_TIMESTAMP()"])
    insert = f"WHEN NOT MATCHED THEN INSERT ({targets}) VALUES ({values})"
    statement = f"MERGE INTO {q(schema)}.{q(shape.name)} AS t USING ({source}) AS s ON {on} "
    if not upsert:
        return statement + insert
    seq = q(column(SEQUENCE))
    updates = ", ".join(
        [
            *(f"{q(column(c))} = s.{q(column(c))}" for c in columns if c not in keys),
            f"{q(BATCHED_AT)} = CURRENT_TIMESTAMP()",
        ]
    )
    return (
        statement
        + f"WHEN MATCHED AND (t.{seq} IS NULL OR t.{seq} <= s.{seq}) THEN UPDATE SET {updates} "
        + insert
    )


def activate(schema: str, table: str) -> str:
    version = q(column(TABLE_VERSION))
    return f"DELETE FROM {q(schema)}.{q(table)} WHERE {version} IS NULL OR {version} < ?"


def loaded(schema: str, count: int) -> str:
    marks = ", ".join(["?"] * count)
    return f"SELECT BATCH_ID FROM {q(schema)}.{q(LOADS)} WHERE BATCH_ID IN ({marks})"


def metadata(schema: str) -> list[str]:
    return [
        f"CREATE SCHEMA IF NOT EXISTS {q(schema)}",
        f"CREATE STAGE IF NOT EXISTS {q(schema)}.{q(STAGE)}",
        f"CREATE TABLE IF NOT EXISTS {q(schema)}.{q(LOADS)} (BATCH_ID NUMBER(38,0) NOT NULL, "
        "TABLE_NAME VARCHAR NOT NULL, LEASE_TOKEN VARCHAR, RECORDS NUMBER(38,0) NOT NULL, "
        "LOADED_AT TIMESTAMP_TZ NOT NULL)",
        f"CREATE TABLE IF NOT EXISTS {q(schema)}.{q(REJECTED)} (TABLE_NAME VARCHAR NOT NULL, "
        "RECORD VARCHAR NOT NULL, REASON VARCHAR NOT NULL, BATCH_IDS VARCHAR NOT NULL, "
        "REJECTED_AT TIMESTAMP_TZ NOT NULL)",
        f"CREATE TABLE IF NOT EXISTS {q(schema)}.{q(TABLES)} (TABLE_NAME VARCHAR NOT NULL, "
        "PRIMARY_KEYS VARCHAR NOT NULL)",
    ]


def record_loads(schema: str) -> str:
    return (
        f"INSERT INTO {q(schema)}.{q(LOADS)} "
        "(BATCH_ID, TABLE_NAME, LEASE_TOKEN, RECORDS, LOADED_AT) "
        "VALUES (?, ?, ?, ?, CAST(? AS TIMESTAMP_TZ))"
    )


def record_rejected(schema: str) -> str:
    return (
        f"INSERT INTO {q(schema)}.{q(REJECTED)} "
        "(TABLE_NAME, RECORD, REASON, BATCH_IDS, REJECTED_AT) "
        "VALUES (?, ?, ?, ?, CAST(? AS TIMESTAMP_TZ))"
    )
