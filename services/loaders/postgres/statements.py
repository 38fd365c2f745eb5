"""The SQL of a Postgres load, executed on the load's cursor: the type mapping (Stitch types to
Postgres columns and back), identifiers, DDL (create, widen, re-key), the deletes of an
``activate_version`` and of stale child rows, and the bookkeeping tables ``_sdc_loads`` and
``_sdc_rejected`` (the merge itself: ``merge.py``; COPY: ``staging.py``).

Identifiers are always quoted with ``psycopg2.sql.Identifier`` (``bound_ident`` renders them
once, so a ``%`` in a name is never taken for a parameter); values travel as parameters, never
as SQL text. ``warehouse.py`` decides what runs when, in the lease's one transaction.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import psycopg2
import psycopg2.errors
import psycopg2.extensions
from psycopg2 import sql

from services.loaders.core import notes
from services.loaders.core.errors import (
    PermanentError,
)
from services.loaders.core.names import NameRules, starts_with_pattern
from services.loaders.core.plan import PlanBuilder, Rejection, Segment
from services.loaders.core.shape import TableShape
from services.loaders.core.system_columns import PRIMARY_KEY, SOURCE_KEY, TABLE_VERSION
from services.loaders.core.types import ColumnType

RULES = NameRules(max_bytes=63, case="preserve", max_columns=1600)
SQL_TYPES = {
    ColumnType.BIGINT: "bigint",
    ColumnType.BOOLEAN: "boolean",
    ColumnType.NUMERIC: "numeric",
    ColumnType.DOUBLE: "double precision",
    ColumnType.TEXT: "text",
    ColumnType.TIMESTAMP: "timestamp with time zone",
}
FROM_SQL = {v: k for k, v in SQL_TYPES.items()} | {
    "integer": ColumnType.BIGINT,
    "smallint": ColumnType.BIGINT,
    "real": ColumnType.DOUBLE,
    "character varying": ColumnType.TEXT,
    "timestamp without time zone": ColumnType.TIMESTAMP,
}
NATIVE_TYPES = frozenset(SQL_TYPES.values())  # as information_schema spells them
LOADS = "_sdc_loads"
REJECTED = "_sdc_rejected"


def render(kind: ColumnType, value: Any) -> str:
    """A value as a field of Postgres COPY ... FORMAT csv (text quoted: '' stays an empty
    string, an empty field is NULL)."""
    if kind is ColumnType.TEXT or kind is ColumnType.TIMESTAMP:
        text = str(value)
        return '"' + text.replace('"', '""') + '"' if '"' in text else '"' + text + '"'
    if kind is ColumnType.BOOLEAN:
        return "true" if value else "false"
    if kind is ColumnType.DOUBLE:
        return repr(float(value))
    return str(value)


# ``render`` inlined into the compiled record plans (core.fastplan): (text before, expression,
# text after). The values there are already of the plan's Python type (str for TEXT and
# TIMESTAMP); the property test in tests/unit/test_loader_fastplan.py holds these to ``render``.
INLINE = {
    ColumnType.TEXT: ('"', "{0}.replace(Q, QQ)", '"'),
    ColumnType.TIMESTAMP: ('"', "{0}.replace(Q, QQ)", '"'),
    ColumnType.BOOLEAN: ("", '("true" if {0} else "false")', ""),
    ColumnType.DOUBLE: ("", "float({0})!r", ""),
    ColumnType.BIGINT: ("", "{0}", ""),
}
# A plain record's strings hold no quote (fastplan.compile_plan): nothing to double.
PLAIN_INLINE = {
    ColumnType.TEXT: ('"', "{0}", '"'),
    ColumnType.TIMESTAMP: ('"', "{0}", '"'),
}


def ident(*parts: str) -> sql.Identifier:
    return sql.Identifier(*parts)


def bound_ident(cur: Any, *parts: str) -> sql.SQL:
    """A quoted name for a statement that also takes parameters: psycopg2 reads every ``%`` in
    such a statement as a placeholder, so a name's own ``%`` (a table ``x%s``) is doubled."""
    return sql.SQL(ident(*parts).as_string(cur).replace("%", "%%"))


def existing_shapes(cur: Any, schema: str, source: str) -> dict[str, TableShape]:
    """The table of root ``source`` and its subtables as they are now, with their primary keys
    (and maybe tables of other roots whose names start alike: ``PlanBuilder.is_subtable``)."""
    table = RULES.table(source)
    like = starts_with_pattern(RULES.subtable_prefix(source))
    # The catalogs, not information_schema (whose views cost ~10 ms a load on a busy server),
    # in one round trip: each column with its type (as information_schema names it: no
    # modifiers) and its position in the table's primary key, if any.
    cur.execute(
        """SELECT c.relname, a.attname, format_type(a.atttypid, NULL),
                  array_position(k.conkey, a.attnum)
           FROM pg_catalog.pg_class c
           JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
           JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid
           LEFT JOIN pg_catalog.pg_constraint k ON k.conrelid = c.oid AND k.contype = 'p'
           WHERE n.nspname = %s AND (c.relname = %s OR c.relname LIKE %s)
             AND c.relkind IN ('r', 'p', 'v', 'f', 'm')
             AND a.attnum > 0 AND NOT a.attisdropped
           ORDER BY c.relname, a.attnum""",
        (schema, table, like),
    )
    shapes: dict[str, TableShape] = {}
    keys: dict[str, list[tuple[int, str]]] = {}
    for name, column, data_type, key_position in cur.fetchall():
        shape = shapes.setdefault(name, TableShape(name, exists=True))
        shape.columns[column] = FROM_SQL.get(data_type, ColumnType.TEXT)
        if data_type not in NATIVE_TYPES:
            shape.foreign.add(column)
        if key_position is not None and name == table:
            keys.setdefault(name, []).append((key_position, column))
    for name, positions in keys.items():
        shapes[name].primary_key = tuple(column for _, column in sorted(positions))
    return shapes


def _column_defs(shape: TableShape, columns: Iterable[str]) -> sql.Composed:
    return sql.SQL(", ").join(
        sql.SQL("{} {}").format(ident(c), sql.SQL(SQL_TYPES[shape.columns[c]])) for c in columns
    )


def apply_ddl(cur: Any, schema: str, shape: TableShape, key: tuple[str, ...] | None) -> None:
    """Create the table, add its new columns, widen columns in place. ``key``: primary key
    columns for a root table (None for a subtable, which gets an index on its source keys)."""
    table = ident(schema, shape.name)
    notes.note_shape(shape)
    if not shape.exists:
        defs = _column_defs(shape, shape.columns)
        if key:
            cur.execute(
                sql.SQL("CREATE TABLE {} ({}, PRIMARY KEY ({}))").format(
                    table, defs, sql.SQL(", ").join(map(ident, key))
                )
            )
            shape.primary_key = key
        else:
            cur.execute(sql.SQL("CREATE TABLE {} ({})").format(table, defs))
            sources = [c for c in shape.columns if c.startswith(SOURCE_KEY)]
            if sources:
                cur.execute(
                    sql.SQL("CREATE INDEX ON {} ({})").format(
                        table, sql.SQL(", ").join(map(ident, sources))
                    )
                )
        shape.exists = True
    else:
        for column, kind in shape.added.items():
            cur.execute(
                sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} {}").format(
                    table, ident(column), sql.SQL(SQL_TYPES[kind])
                )
            )
        for column, kind in shape.widened.items():
            cur.execute(
                sql.SQL("ALTER TABLE {} ALTER COLUMN {} TYPE {}").format(
                    table, ident(column), sql.SQL(SQL_TYPES[kind])
                )
            )
    shape.added.clear()
    shape.widened.clear()


def rekey(cur: Any, schema: str, shape: TableShape, key: tuple[str, ...]) -> None:
    """Change the table's primary key to ``key`` if its rows allow; else park the batch."""
    if shape.primary_key == key:
        return
    table = ident(schema, shape.name)
    cur.execute("SAVEPOINT rekey")
    try:
        if key == (PRIMARY_KEY,) and PRIMARY_KEY not in shape.columns:
            cur.execute(
                sql.SQL("ALTER TABLE {} ADD COLUMN {} text").format(table, ident(PRIMARY_KEY))
            )
            shape.columns[PRIMARY_KEY] = ColumnType.TEXT
        if key == (PRIMARY_KEY,):
            cur.execute(
                sql.SQL("UPDATE {} SET {} = gen_random_uuid()::text WHERE {} IS NULL").format(
                    table, ident(PRIMARY_KEY), ident(PRIMARY_KEY)
                )
            )
        cur.execute(
            """SELECT constraint_name FROM information_schema.table_constraints
               WHERE table_schema = %s AND table_name = %s AND constraint_type = 'PRIMARY KEY'""",
            (schema, shape.name),
        )
        for (constraint,) in cur.fetchall():
            cur.execute(
                sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(table, ident(constraint))
            )
        cur.execute(
            sql.SQL("ALTER TABLE {} ADD PRIMARY KEY ({})").format(
                table, sql.SQL(", ").join(map(ident, key))
            )
        )
    except psycopg2.Error as exc:
        cur.execute("ROLLBACK TO SAVEPOINT rekey")
        raise PermanentError(
            f"key names of {shape.name} changed from {list(shape.primary_key)} to {list(key)} "
            f"but the existing rows cannot be re-keyed ({str(exc).strip()}); fix the rows or "
            "the key names, then retry the batch"
        ) from exc
    cur.execute("RELEASE SAVEPOINT rekey")
    shape.primary_key = key


def stale_children(
    shapes: dict[str, TableShape], builder: PlanBuilder, segment: Segment
) -> list[str]:
    """Subtables a segment does not touch, which still lose the rows of parents it rewrites."""
    touched = {c.shape.name for c in segment.children.values()}
    wanted = {SOURCE_KEY + k for k in segment.key_columns}
    return [
        name
        for name, shape in shapes.items()
        if name not in touched
        and shape.exists
        and builder.is_subtable(name)
        and wanted <= set(shape.columns)
    ]


def delete_stale_children(
    cur: Any, schema: str, tables: list[str], key_columns: tuple[str, ...], won: str
) -> None:
    match = sql.SQL(" AND ").join(
        sql.SQL("c.{} = w.{}").format(ident(SOURCE_KEY + k), ident(k)) for k in key_columns
    )
    for name in tables:
        cur.execute(
            sql.SQL("DELETE FROM {} c USING {} w WHERE {}").format(
                ident(schema, name), ident(won), match
            )
        )


def has_subtables(shapes: dict[str, TableShape], builder: PlanBuilder) -> bool:
    return any(shape.exists and builder.is_subtable(name) for name, shape in shapes.items())


def versioned_tables(
    shapes: dict[str, TableShape], root: str, builder: PlanBuilder
) -> list[tuple[str, bool]]:
    """The existing table and subtables an activation clears, each with whether it has the
    ``_sdc_table_version`` column yet: one this lease only plans to add (for rows still to come)
    is not there when the activation runs, so all of that table's rows are of no version."""
    return [
        (name, TABLE_VERSION not in shape.added)
        for name, shape in shapes.items()
        if shape.exists
        and TABLE_VERSION in shape.columns
        and (name == root or builder.is_subtable(name))
    ]


def activate(cur: Any, schema: str, tables: list[tuple[str, bool]], version: int) -> None:
    """Full-table replication: rows of older table versions are gone, subtables too."""
    for name, versioned in tables:
        if not versioned:
            cur.execute(sql.SQL("DELETE FROM {}").format(ident(schema, name)))
            continue
        cur.execute(
            sql.SQL("DELETE FROM {} WHERE {} IS NULL OR {} < %s").format(
                bound_ident(cur, schema, name), ident(TABLE_VERSION), ident(TABLE_VERSION)
            ),
            (version,),
        )


def record_rejections(
    cur: Any, schema: str, table: str, rejected: list[Rejection], batch_ids: list[int]
) -> None:
    if not rejected:
        return
    cur.executemany(
        sql.SQL("INSERT INTO {} (table_name, record, reason, batch_ids) VALUES (%s, %s, %s, %s)")
        .format(bound_ident(cur, schema, REJECTED))
        .as_string(cur),
        [
            (table, r.record.decode("utf-8", "replace").replace("\x00", ""), r.reason, batch_ids)
            for r in rejected
        ],
    )


def create_metadata(cur: Any, schema: str) -> None:
    """The schema and the bookkeeping tables ``_sdc_loads`` and ``_sdc_rejected``, if missing,
    under an advisory lock on the schema's name (``warehouse.ensure_metadata`` retries)."""
    cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (schema,))
    cur.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(ident(schema)))
    cur.execute(
        sql.SQL(
            """CREATE TABLE IF NOT EXISTS {} (
                   batch_id bigint PRIMARY KEY, table_name text NOT NULL,
                   lease_token text, records bigint NOT NULL,
                   loaded_at timestamptz NOT NULL DEFAULT now())"""
        ).format(ident(schema, LOADS))
    )
    cur.execute(
        sql.SQL(
            """CREATE TABLE IF NOT EXISTS {} (
                   table_name text NOT NULL, record text NOT NULL, reason text NOT NULL,
                   batch_ids bigint[] NOT NULL,
                   rejected_at timestamptz NOT NULL DEFAULT now())"""
        ).format(ident(schema, REJECTED))
    )


def select_loaded(cur: Any, schema: str, batch_ids: list[int]) -> set[int]:
    """Which of ``batch_ids`` are in ``_sdc_loads``; the query names ``_sdc_rejected`` too, so
    that a missing bookkeeping table fails it (``UndefinedTable``)."""
    cur.execute(
        sql.SQL(
            "SELECT batch_id FROM {} WHERE batch_id = ANY(%s) "
            "UNION ALL SELECT NULL FROM {} WHERE false"
        ).format(bound_ident(cur, schema, LOADS), bound_ident(cur, schema, REJECTED)),
        (batch_ids,),
    )
    return {r[0] for r in cur.fetchall()}


def record_loads(
    cur: Any, schema: str, table: str, lease_token: str, batch_ids: list[int], counts: list[int]
) -> None:
    """The batch ids in ``_sdc_loads``, in the load's transaction: a batch recorded meanwhile
    fails the primary key and rolls the load back."""
    cur.execute(
        sql.SQL(
            "INSERT INTO {} (batch_id, table_name, lease_token, records) "
            "SELECT unnest(%s::bigint[]), %s, %s, unnest(%s::bigint[])"
        ).format(bound_ident(cur, schema, LOADS)),
        (batch_ids, table, lease_token, counts),
    )
