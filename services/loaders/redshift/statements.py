"""Redshift SQL for one load and its type mapping (column types; ``render``: a value as the JSON
literal of a staged row), as pure functions over table shapes (unit-tested and parsed with
sqlglot's Redshift dialect; the merge runs on Postgres too, where the dialects agree).

Identifiers are always quoted with sqlglot's Redshift quoting; values are ``%s`` parameters
(``redshift_connector``'s and psycopg2's style). The two exceptions take literals, quoted by
sqlglot, because Redshift accepts no parameters there: ``COMMENT ON`` (the key columns, our own
names) and ``COPY`` (the operator's S3 location and credentials).

Redshift has no ``ON CONFLICT``: a segment is deduplicated into ``win`` (per key the greatest
sequence, ties to the later row), the keys it may overwrite go to ``won`` (new keys, or an
existing row with a sequence not greater), those rows are deleted and re-inserted.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import UTC
from typing import Any

import orjson
from sqlglot import exp

from services.loaders.core.names import NameRules
from services.loaders.core.plan import Rejected, aware_timestamp
from services.loaders.core.shape import TableShape
from services.loaders.core.system_columns import (
    BATCHED_AT,
    ROW,
    SEQUENCE,
    SOURCE_KEY,
    TABLE_VERSION,
)
from services.loaders.core.types import ColumnType

# Redshift: 127-byte identifiers, folded to lower case; columns keep 12 bytes for split
# suffixes (115), as Stitch does. Column types never change in place except VARCHAR length.
RULES = NameRules(
    max_bytes=127, case="lower", max_columns=1600, reserved_suffix_bytes=12, widen_in_place=False
)
MAX_VARCHAR = 65535  # bytes
MIN_VARCHAR = 256
SQL_TYPES = {
    ColumnType.BIGINT: "BIGINT",
    ColumnType.BOOLEAN: "BOOLEAN",
    ColumnType.NUMERIC: "NUMERIC(38,0)",
    ColumnType.DOUBLE: "DOUBLE PRECISION",
    ColumnType.TIMESTAMP: "TIMESTAMPTZ",
}
FROM_SQL = {
    "bigint": ColumnType.BIGINT,
    "integer": ColumnType.BIGINT,
    "smallint": ColumnType.BIGINT,
    "boolean": ColumnType.BOOLEAN,
    "numeric": ColumnType.NUMERIC,
    "double precision": ColumnType.DOUBLE,
    "real": ColumnType.DOUBLE,
    "character varying": ColumnType.TEXT,
    "text": ColumnType.TEXT,
    "timestamp with time zone": ColumnType.TIMESTAMP,
    "timestamp without time zone": ColumnType.TIMESTAMP,
}
LOADS = "_sdc_loads"
REJECTED = "_sdc_rejected"
_MAX_DIGITS = 38


def render(kind: ColumnType, value: Any) -> str:
    """A value as a JSON literal (a field of a staged row); refuses what Redshift cannot hold."""
    if kind is ColumnType.TEXT:
        text = orjson.dumps(str(value)).decode()
        if len(str(value).encode()) > MAX_VARCHAR:
            raise Rejected(f"a string longer than {MAX_VARCHAR} bytes (Redshift's VARCHAR)")
        return text
    if kind is ColumnType.TIMESTAMP:
        return '"' + aware_timestamp(value).astimezone(UTC).isoformat(sep=" ") + '"'
    if kind is ColumnType.BOOLEAN:
        return "true" if value else "false"
    if kind is ColumnType.DOUBLE:
        return repr(float(value))
    if kind is ColumnType.VARIANT:
        raise Rejected("nested values are de-nested for Redshift")
    text = str(int(value))
    if len(text.lstrip("-")) > _MAX_DIGITS:
        raise Rejected(f"integer {text} has more than {_MAX_DIGITS} digits (NUMERIC(38,0))")
    return text


def q(name: str) -> str:
    return str(exp.to_identifier(name, quoted=True).sql(dialect="redshift"))


def t(schema: str, table: str) -> str:
    return f"{q(schema)}.{q(table)}"


def literal(text: str) -> str:
    return str(exp.Literal.string(text).sql(dialect="redshift"))


def varchar_size(needed: int) -> int:
    """A VARCHAR length for ``needed`` bytes: the next power of two, 256 to 65535."""
    size = MIN_VARCHAR
    while size < needed:
        size *= 2
    return min(size, MAX_VARCHAR)


def sql_type(kind: ColumnType, length: int | None) -> str:
    if kind is ColumnType.TEXT:
        return f"VARCHAR({varchar_size(length or 0)})"
    return SQL_TYPES[kind]


def _defs(shape: TableShape, columns: Iterable[str], lengths: dict[str, int]) -> str:
    return ", ".join(f"{q(c)} {sql_type(shape.columns[c], lengths.get(c))}" for c in columns)


def create_table(schema: str, shape: TableShape, lengths: dict[str, int]) -> str:
    defs = _defs(shape, shape.columns, lengths)
    return f"CREATE TABLE IF NOT EXISTS {t(schema, shape.name)} ({defs})"


def add_column(schema: str, table: str, name: str, kind: ColumnType, length: int | None) -> str:
    return f"ALTER TABLE {t(schema, table)} ADD COLUMN {q(name)} {sql_type(kind, length)}"


def widen_varchar(schema: str, table: str, name: str, length: int) -> str:
    """Redshift runs this only outside a transaction block."""
    return f"ALTER TABLE {t(schema, table)} ALTER COLUMN {q(name)} TYPE VARCHAR({length})"


def set_keys(schema: str, table: str, keys: Sequence[str]) -> str:
    """Key columns in the table comment (Stitch's ``{"primary_keys": [...]}``)."""
    comment = json.dumps({"primary_keys": list(keys)}, ensure_ascii=False)
    return f"COMMENT ON TABLE {t(schema, table)} IS {literal(comment)}"


def keys_of(comment: str | None) -> tuple[str, ...]:
    try:
        found = json.loads(comment or "")
    except ValueError:
        return ()
    keys = found.get("primary_keys") if isinstance(found, dict) else None
    return tuple(str(k) for k in keys) if isinstance(keys, list) else ()


def table_comment() -> str:
    return (
        "SELECT d.description FROM pg_catalog.pg_description d "
        "JOIN pg_catalog.pg_class c ON c.oid = d.objoid "
        "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relname = %s AND d.objsubid = 0"
    )


def columns_of() -> str:
    return (
        "SELECT table_name, column_name, data_type, character_maximum_length "
        "FROM information_schema.columns WHERE table_schema = %s "
        "AND (table_name = %s OR table_name LIKE %s) ORDER BY table_name, ordinal_position"
    )


def bad_keys(schema: str, table: str, keys: Sequence[str]) -> str:
    cols = ", ".join(map(q, keys))
    nulls = " OR ".join(f"{q(k)} IS NULL" for k in keys)
    return (
        f"SELECT (SELECT COUNT(*) FROM (SELECT {cols} FROM {t(schema, table)} GROUP BY {cols} "
        f"HAVING COUNT(*) > 1) d) + (SELECT COUNT(*) FROM {t(schema, table)} WHERE {nulls})"
    )


def fill_primary_key(schema: str, table: str, key: str) -> str:
    return (
        f"UPDATE {t(schema, table)} "
        f"SET {q(key)} = MD5(RANDOM()::VARCHAR || {q(SEQUENCE)}::VARCHAR) "
        f"WHERE {q(key)} IS NULL"
    )


def lock(schema: str, table: str) -> str:
    """Serialises loads of one table until commit (Redshift and Postgres: LOCK)."""
    return f"LOCK TABLE {t(schema, table)}"


def create_staging(name: str, shape: TableShape, order: Sequence[str]) -> str:
    defs = ", ".join(
        f"{q(c)} BIGINT" if c == ROW else f"{q(c)} {sql_type(shape.columns[c], MAX_VARCHAR)}"
        for c in order
    )
    return f"CREATE TEMP TABLE {q(name)} ({defs})"


def copy_json(name: str, order: Sequence[str], url: str, paths_url: str, auth: str) -> str:
    """COPY a gzip JSON-lines object (one array per row) through a JSONPaths file."""
    columns = ", ".join(map(q, order))
    return (
        f"COPY {q(name)} ({columns}) FROM {literal(url)} {auth} "
        f"FORMAT AS JSON {literal(paths_url)} GZIP TIMEFORMAT 'auto' COMPUPDATE OFF STATUPDATE OFF"
    )


def copy_auth(config: dict[str, Any], secrets: dict[str, str]) -> str:
    """``IAM_ROLE`` (preferred) or an access key pair, and the bucket's region."""
    parts = []
    if config.get("iam_role"):
        parts.append(f"IAM_ROLE {literal(str(config['iam_role']))}")
    elif secrets.get("aws_secret_access_key"):
        parts.append(f"ACCESS_KEY_ID {literal(str(config.get('aws_access_key_id', '')))}")
        parts.append(f"SECRET_ACCESS_KEY {literal(secrets['aws_secret_access_key'])}")
    if config.get("s3_region"):
        parts.append(f"REGION {literal(str(config['s3_region']))}")
    return " ".join(parts)


def jsonpaths(width: int) -> bytes:
    return json.dumps({"jsonpaths": [f"$[{i}]" for i in range(width)]}).encode()


def dedupe(win: str, staging: str, columns: Sequence[str], keys: Sequence[str]) -> str:
    cols = ", ".join(map(q, [*columns, ROW]))
    partition = ", ".join(map(q, keys))
    return (
        f"CREATE TEMP TABLE {q(win)} AS SELECT {cols} FROM (SELECT {cols}, ROW_NUMBER() OVER "
        f"(PARTITION BY {partition} ORDER BY {q(SEQUENCE)} DESC, {q(ROW)} DESC) AS _sdc_rank "
        f"FROM {q(staging)}) r WHERE _sdc_rank = 1"
    )


def winners(won: str, win: str, schema: str, table: str, keys: Sequence[str], upsert: bool) -> str:
    """The keys this segment writes: new ones, and (upsert) rows whose sequence is not greater."""
    on = " AND ".join(f"x.{q(k)} = w.{q(k)}" for k in keys)
    fresh = f"x.{q(keys[0])} IS NULL"
    seq = q(SEQUENCE)
    where = f"{fresh} OR x.{seq} IS NULL OR x.{seq} <= w.{seq}" if upsert else fresh
    return (
        f"CREATE TEMP TABLE {q(won)} AS SELECT {', '.join(f'w.{q(k)}' for k in keys)} "
        f"FROM {q(win)} w LEFT JOIN {t(schema, table)} x ON {on} WHERE {where}"
    )


def delete_written(schema: str, table: str, won: str, pairs: Sequence[tuple[str, str]]) -> str:
    """Delete the rows of ``table`` whose (column, won key) pairs match: a parent's rows being
    replaced, or a subtable's rows of those parents."""
    match = " AND ".join(f"{t(schema, table)}.{q(c)} = {q(won)}.{q(k)}" for c, k in pairs)
    return f"DELETE FROM {t(schema, table)} USING {q(won)} WHERE {match}"


def insert_winners(
    schema: str, table: str, win: str, won: str, columns: Sequence[str], keys: Sequence[str]
) -> str:
    """Parameter: ``_sdc_batched_at``."""
    targets = ", ".join(map(q, [*columns, BATCHED_AT]))
    selected = ", ".join([*(f"w.{q(c)}" for c in columns), "%s"])
    on = " AND ".join(f"o.{q(k)} = w.{q(k)}" for k in keys)
    return (
        f"INSERT INTO {t(schema, table)} ({targets}) SELECT {selected} "
        f"FROM {q(win)} w JOIN {q(won)} o ON {on}"
    )


def insert_children(
    schema: str,
    table: str,
    staging: str,
    win: str,
    won: str,
    columns: Sequence[str],
    keys: Sequence[str],
) -> str:
    """A subtable's rows of the winning parent records. Parameter: ``_sdc_batched_at``."""
    targets = ", ".join(map(q, [*columns, BATCHED_AT]))
    selected = ", ".join([*(f"s.{q(c)}" for c in columns), "%s"])
    on = " AND ".join(f"p.{q(k)} = o.{q(k)}" for k in keys)
    return (
        f"INSERT INTO {t(schema, table)} ({targets}) SELECT {selected} FROM {q(staging)} s "
        f"JOIN {q(win)} p ON p.{q(ROW)} = s.{q(ROW)} JOIN {q(won)} o ON {on}"
    )


def source_pairs(keys: Sequence[str]) -> list[tuple[str, str]]:
    return [(SOURCE_KEY + k, k) for k in keys]


def activate(schema: str, table: str) -> str:
    version = q(TABLE_VERSION)
    return f"DELETE FROM {t(schema, table)} WHERE {version} IS NULL OR {version} < %s"


def drop(name: str) -> str:
    return f"DROP TABLE IF EXISTS {q(name)}"


def metadata(schema: str) -> list[str]:
    return [
        f"CREATE SCHEMA IF NOT EXISTS {q(schema)}",
        f"CREATE TABLE IF NOT EXISTS {t(schema, LOADS)} (batch_id BIGINT NOT NULL, "
        "table_name VARCHAR(65535) NOT NULL, lease_token VARCHAR(256), records BIGINT NOT NULL, "
        "loaded_at TIMESTAMPTZ NOT NULL)",
        f"CREATE TABLE IF NOT EXISTS {t(schema, REJECTED)} (table_name VARCHAR(65535) NOT NULL, "
        "record VARCHAR(65535) NOT NULL, reason VARCHAR(65535) NOT NULL, "
        "batch_ids VARCHAR(65535) NOT NULL, rejected_at TIMESTAMPTZ NOT NULL)",
    ]


def loaded(schema: str, count: int) -> str:
    marks = ", ".join(["%s"] * count)
    return f"SELECT batch_id FROM {t(schema, LOADS)} WHERE batch_id IN ({marks})"


def record_loads(schema: str) -> str:
    return (
        f"INSERT INTO {t(schema, LOADS)} (batch_id, table_name, lease_token, records, loaded_at) "
        "VALUES (%s, %s, %s, %s, %s)"
    )


def record_rejected(schema: str) -> str:
    return (
        f"INSERT INTO {t(schema, REJECTED)} "
        "(table_name, record, reason, batch_ids, rejected_at) VALUES (%s, %s, %s, %s, %s)"
    )
