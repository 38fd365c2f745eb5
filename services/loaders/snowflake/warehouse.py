"""Loading one lease into Snowflake: stage the rows (``staging``: Parquet files, ``COPY INTO``
staging tables), then one ``MERGE`` per segment and the batch ids in ``_SDC_LOADS`` in ONE
transaction (exactly once). This module decides what runs when; the SQL is ``statements``.

Snowflake commits implicitly before any DDL, so everything that is DDL or a bulk copy — new
tables and columns, the staging tables and their ``COPY INTO`` — runs first, each step
idempotent; the transaction then holds only DML. Nested objects and arrays stay whole in
VARIANT columns (``keep_nesting``): no subtables.
"""

from __future__ import annotations

import contextlib
import uuid
from datetime import UTC, datetime
from typing import Any

from services.loaders.core import faults, notes
from services.loaders.core.bookkeeping import load_rows, rejected_rows
from services.loaders.core.plan import LeaseLoad, PlanBuilder, Segment
from services.loaders.core.rekey import check_rekey
from services.loaders.core.shape import TableShape
from services.loaders.core.system_columns import PRIMARY_KEY, TABLE_VERSION
from services.loaders.core.types import ColumnType
from services.loaders.snowflake import statements as S
from services.loaders.snowflake.staging import stage
from services.loaders.snowflake.statements import RULES


def ensure_metadata(cur: Any, schema: str) -> None:
    for statement in S.metadata(schema):
        cur.execute(statement)


def loaded_batches(cur: Any, schema: str, batch_ids: list[int]) -> set[int]:
    if not batch_ids:
        return set()
    cur.execute(S.loaded(schema, len(batch_ids)), batch_ids)
    return {int(r[0]) for r in cur.fetchall()}


def existing_shape(cur: Any, schema: str, table: str) -> dict[str, TableShape]:
    cur.execute(
        "SELECT COLUMN_NAME, DATA_TYPE FROM INFORMATION_SCHEMA.COLUMNS "
        "WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION",
        [schema, table],
    )
    rows = cur.fetchall()
    if not rows:
        return {}
    shape = TableShape(table, exists=True)
    for name, data_type in rows:
        shape.columns[S.planned(name)] = S.FROM_SQL.get(str(data_type).upper(), ColumnType.TEXT)
    cur.execute(S.read_keys(schema), [table])
    found = cur.fetchone()
    shape.primary_key = S.keys_of(found[0] if found else None)
    return {table: shape}


def apply_ddl(cur: Any, schema: str, shape: TableShape) -> None:
    """Create the table or add its new columns (a widening needs nothing: integers of any
    size up to 38 digits share NUMBER(38,0))."""
    notes.note_shape(shape)
    if not shape.exists:
        cur.execute(S.create_table(schema, shape))
        shape.exists = True
    else:
        for statement in S.add_columns(schema, shape):
            cur.execute(statement)
    shape.added.clear()
    shape.widened.clear()


def rekey(cur: Any, schema: str, shape: TableShape, keys: tuple[str, ...]) -> None:
    """Make ``keys`` the table's key if its rows allow (inside the load's transaction)."""
    if shape.primary_key == keys:
        return
    if shape.primary_key:
        fill = S.fill_primary_key(schema, shape.name, PRIMARY_KEY)
        check_rekey(cur, shape, keys, fill, S.duplicate_keys(schema, shape.name, keys))
    delete, insert = S.write_keys(schema)
    cur.execute(delete, [shape.name])
    cur.execute(insert, [shape.name, S.key_json(keys)])
    shape.primary_key = keys


def load(conn: Any, schema: str, work: LeaseLoad) -> tuple[int, int]:
    """Load a lease's batches; returns (rows written, records rejected). Batches another
    loader committed meanwhile make the transaction roll back as already loaded: (0, 0)."""
    cur = conn.cursor()
    cur.execute(S.use(schema))
    table = RULES.table(work.table_source)
    shapes = existing_shape(cur, schema, table)
    builder = PlanBuilder(work.table_source, RULES, S.render, shapes, keep_nesting=True)
    run = uuid.uuid4().hex[:12].upper()
    staging: list[tuple[Segment, str, list[str]]] = []
    created: list[str] = []  # staging tables to drop, even when staging fails half-way
    try:
        for event in work.events:
            builder.feed(event)
        for number, segment in enumerate(builder.segments):
            if segment.rows:
                apply_ddl(cur, schema, segment.root.shape)
                name = f"_SDC_STG_{run}_{number}"
                created.append(name)
                staging.append((segment, name, stage(cur, schema, segment.root, name)))
        batched_at = datetime.now(UTC).isoformat()
        cur.execute("BEGIN")
        try:
            written = _merge_all(cur, schema, table, builder, staging)
            # A MERGE holds the table's lock until commit: a concurrent loader of the same
            # batches (a lease that expired mid-load) has committed by now, or waits for us.
            if loaded_batches(cur, schema, work.batch_ids):
                cur.execute("ROLLBACK")
                return 0, 0
            _record(cur, schema, work, builder, batched_at)
            faults.hit("before_commit")
            cur.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(Exception):
                cur.execute("ROLLBACK")
            raise
    finally:
        builder.close()
        for name in created:
            with contextlib.suppress(Exception):
                cur.execute(S.drop_staging(name))
    return written, len(builder.rejected)


def _merge_all(
    cur: Any,
    schema: str,
    table: str,
    builder: PlanBuilder,
    staging: list[tuple[Segment, str, list[str]]],
) -> int:
    written = 0
    staged = {id(segment): (name, columns) for segment, name, columns in staging}
    for segment in builder.segments:
        shape = segment.root.shape
        if id(segment) in staged:
            name, columns = staged[id(segment)]
            rekey(cur, schema, shape, segment.key_columns)
            upsert = bool(segment.key_names)
            cur.execute(S.merge(schema, shape, name, columns, segment.key_columns, upsert))
            written += _affected(cur)
        if segment.activate_version is not None and shape.exists and TABLE_VERSION in shape.columns:
            cur.execute(S.activate(schema, table), [segment.activate_version])
    return written


def _affected(cur: Any) -> int:
    """Rows a MERGE inserted or updated (its one result row: a count per action)."""
    row = cur.fetchone()
    return sum(int(v) for v in row) if row else 0


def _record(cur: Any, schema: str, work: LeaseLoad, builder: PlanBuilder, batched_at: str) -> None:
    if builder.rejected:
        rows = rejected_rows(work, builder.rejected, batched_at)
        cur.executemany(S.record_rejected(schema), rows)
    cur.executemany(S.record_loads(schema), load_rows(work, batched_at))


def schema_of(config: dict[str, Any], client_id: int) -> str:
    schema = config.get("schema")
    return S.fold_schema(str(schema)) if schema else f"SKEIN_{client_id}"
