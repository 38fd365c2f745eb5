"""Loading one lease into Redshift, built on the Postgres loader's plan: the same de-nesting,
segments, bookkeeping tables (``_sdc_loads`` in the load's transaction: exactly once) and merge
order. This module decides what runs when; Redshift's differences are the SQL (``statements``)
and how rows get in (``staging``: gzip JSON lines in S3, ``COPY ... FORMAT AS JSON`` into a
temporary staging table, behind ``staging.Copier``).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import uuid
from datetime import UTC, datetime
from typing import Any

from services.loaders.core import faults, notes
from services.loaders.core.bookkeeping import load_rows, rejected_rows
from services.loaders.core.names import starts_with_pattern
from services.loaders.core.plan import LeaseLoad, PlanBuilder, Segment, Staged
from services.loaders.core.rekey import check_rekey
from services.loaders.core.shape import TableShape
from services.loaders.core.system_columns import PRIMARY_KEY, ROW, TABLE_VERSION
from services.loaders.core.types import ColumnType
from services.loaders.redshift import statements as S
from services.loaders.redshift.staging import Copier, StagedFile, json_lines
from services.loaders.redshift.statements import RULES, render


def existing_shapes(
    cur: Any, schema: str, source: str
) -> tuple[dict[str, TableShape], dict[tuple[str, str], int]]:
    """The table of root ``source`` and its subtables (and maybe tables of other roots whose
    names start alike: ``PlanBuilder.is_subtable``), key columns from the table comment, and
    each VARCHAR column's length."""
    table = RULES.table(source)
    like = starts_with_pattern(RULES.subtable_prefix(source))
    cur.execute(S.columns_of(), (schema, table, like))
    shapes: dict[str, TableShape] = {}
    lengths: dict[tuple[str, str], int] = {}
    for name, column, data_type, length in cur.fetchall():
        shape = shapes.setdefault(name, TableShape(name, exists=True))
        shape.columns[column] = S.FROM_SQL.get(str(data_type), ColumnType.TEXT)
        if length:
            lengths[(name, column)] = int(length)
    if table in shapes:
        cur.execute(S.table_comment(), (schema, table))
        found = cur.fetchone()
        shapes[table].primary_key = S.keys_of(found[0] if found else None)
    return shapes, lengths


def apply_ddl(
    cur: Any, schema: str, shape: TableShape, lengths: dict[str, int], key: tuple[str, ...] | None
) -> None:
    notes.note_shape(shape)
    if not shape.exists:
        cur.execute(S.create_table(schema, shape, lengths))
        shape.exists = True
        if key:
            cur.execute(S.set_keys(schema, shape.name, key))
            shape.primary_key = key
    else:
        for column, kind in shape.added.items():
            cur.execute(S.add_column(schema, shape.name, column, kind, lengths.get(column)))
    shape.added.clear()
    shape.widened.clear()


def widenings(
    shapes: dict[str, TableShape], files: list[StagedFile], current: dict[tuple[str, str], int]
) -> list[tuple[str, str, int]]:
    """(table, column, new length) for existing VARCHAR columns too short for this load."""
    out = []
    for staged_file in files:
        name = staged_file.staged.shape.name
        for column, needed in staged_file.lengths.items():
            have = current.get((name, column))
            if have is not None and needed > have and have < S.MAX_VARCHAR:
                out.append((name, column, S.varchar_size(needed)))
    return out


def rekey(cur: Any, schema: str, shape: TableShape, key: tuple[str, ...]) -> None:
    if shape.primary_key == key:
        return
    if shape.primary_key:
        fill = S.fill_primary_key(schema, shape.name, PRIMARY_KEY)
        check_rekey(cur, shape, key, fill, S.bad_keys(schema, shape.name, key))
    cur.execute(S.set_keys(schema, shape.name, key))
    shape.primary_key = key


def load(conn: Any, schema: str, work: LeaseLoad, copier: Copier) -> tuple[int, int]:
    """Load a lease in ONE transaction with its batch ids; (rows written, rejected). Batches
    already recorded (another loader committed them first) roll everything back: (0, 0)."""
    table = RULES.table(work.table_source)
    run = uuid.uuid4().hex[:10]
    temps: list[str] = []
    with tempfile.TemporaryDirectory(prefix="skein-redshift-") as tmp:
        cur = conn.cursor()
        shapes, current = existing_shapes(cur, schema, work.table_source)
        builder = PlanBuilder(work.table_source, RULES, render, shapes)
        try:
            for event in work.events:
                builder.feed(event)
            files: dict[int, StagedFile] = {}
            for staged in _all_staged(builder.segments):
                files[id(staged)] = json_lines(staged, os.path.join(tmp, f"{len(files)}.json.gz"))
            conn.commit()
            _widen(conn, schema, widenings(shapes, list(files.values()), current))
            batched_at = datetime.now(UTC)
            try:
                written = _transaction(
                    cur, schema, table, work, builder, files, copier, run, temps, batched_at
                )
                if written is None:
                    conn.rollback()
                    return 0, 0
                _record(cur, schema, work, builder, batched_at)
                faults.hit("before_commit")
                conn.commit()
            except BaseException:
                with contextlib.suppress(Exception):
                    conn.rollback()
                raise
        finally:
            builder.close()
            _drop(conn, temps)
    return written, len(builder.rejected)


def _all_staged(segments: list[Segment]) -> list[Staged]:
    return [s for seg in segments if seg.rows for s in (seg.root, *seg.children.values())]


def _widen(conn: Any, schema: str, changes: list[tuple[str, str, int]]) -> None:
    """VARCHAR widening runs outside any transaction block (a Redshift rule); it is safe to
    repeat and never narrows."""
    if not changes:
        return
    conn.autocommit = True
    try:
        cur = conn.cursor()
        for table, column, length in changes:
            cur.execute(S.widen_varchar(schema, table, column, length))
    finally:
        conn.autocommit = False


def _transaction(
    cur: Any,
    schema: str,
    table: str,
    work: LeaseLoad,
    builder: PlanBuilder,
    files: dict[int, StagedFile],
    copier: Copier,
    run: str,
    temps: list[str],
    batched_at: datetime,
) -> int | None:
    """DDL, COPY and merges of every segment; None when the batches were loaded meanwhile."""
    locked = False
    written = 0
    for number, segment in enumerate(builder.segments):
        root = segment.root.shape
        if segment.rows:
            apply_ddl(cur, schema, root, files[id(segment.root)].lengths, segment.key_columns)
            for child in segment.children.values():
                apply_ddl(cur, schema, child.shape, files[id(child)].lengths, None)
        if not locked and root.exists:
            cur.execute(S.lock(schema, table))
            locked = True
            cur.execute(S.loaded(schema, len(work.batch_ids)), work.batch_ids)
            if cur.fetchall():
                return None
        if segment.rows:
            rekey(cur, schema, root, segment.key_columns)
            tag = f"{run}_{number}"
            written += _merge(cur, schema, builder, segment, files, copier, tag, temps, batched_at)
        if segment.activate_version is not None and root.exists:
            for name, shape in builder.shapes.items():
                family = name == table or builder.is_subtable(name)
                if shape.exists and TABLE_VERSION in shape.columns and family:
                    cur.execute(S.activate(schema, name), (segment.activate_version,))
    if not locked:
        cur.execute(S.loaded(schema, len(work.batch_ids)), work.batch_ids)
        if cur.fetchall():
            return None
    return written


def _merge(
    cur: Any,
    schema: str,
    builder: PlanBuilder,
    segment: Segment,
    files: dict[int, StagedFile],
    copier: Copier,
    tag: str,
    temps: list[str],
    batched_at: datetime,
) -> int:
    root = segment.root
    keys = list(segment.key_columns)
    stg, win, won = f"stg_{tag}", f"win_{tag}", f"won_{tag}"
    columns = _stage(cur, root, stg, files, copier, temps)
    temps.extend([win, won])
    cur.execute(S.dedupe(win, stg, columns, keys))
    cur.execute(S.winners(won, win, schema, root.shape.name, keys, bool(segment.key_names)))
    cur.execute(S.delete_written(schema, root.shape.name, won, [(k, k) for k in keys]))
    cur.execute(S.insert_winners(schema, root.shape.name, win, won, columns, keys), (batched_at,))
    written = int(cur.rowcount)
    touched = set()
    for index, child in enumerate(segment.children.values()):
        child_stg = f"{stg}_c{index}"
        child_columns = _stage(cur, child, child_stg, files, copier, temps)
        name = child.shape.name
        touched.add(name)
        cur.execute(S.delete_written(schema, name, won, S.source_pairs(keys)))
        cur.execute(
            S.insert_children(schema, name, child_stg, win, won, child_columns, keys),
            (batched_at,),
        )
    wanted = {c for c, _ in S.source_pairs(keys)}
    for name, shape in builder.shapes.items():
        if name == root.shape.name or name in touched or not shape.exists:
            continue
        if builder.is_subtable(name) and wanted <= set(shape.columns):
            cur.execute(S.delete_written(schema, name, won, S.source_pairs(keys)))
    return written


def _stage(
    cur: Any,
    staged: Staged,
    name: str,
    files: dict[int, StagedFile],
    copier: Copier,
    temps: list[str],
) -> list[str]:
    temps.append(name)
    cur.execute(S.create_staging(name, staged.shape, staged.order))
    copier.copy(cur, name, files[id(staged)], name)
    return [c for c in staged.order if c != ROW]


def _record(
    cur: Any, schema: str, work: LeaseLoad, builder: PlanBuilder, batched_at: datetime
) -> None:
    if builder.rejected:
        rows = rejected_rows(work, builder.rejected, batched_at, _bounded)
        cur.executemany(S.record_rejected(schema), rows)
    cur.executemany(S.record_loads(schema), load_rows(work, batched_at))


def _bounded(text: str) -> str:
    """At most Redshift's VARCHAR(65535) bytes, cut on a character boundary."""
    return text.encode()[: S.MAX_VARCHAR].decode("utf-8", "ignore")


def _drop(conn: Any, temps: list[str]) -> None:
    if not temps:
        return
    with contextlib.suppress(Exception):
        cur = conn.cursor()
        for name in temps:
            cur.execute(S.drop(name))
        conn.commit()


def ensure_metadata(conn: Any, schema: str) -> None:
    cur = conn.cursor()
    for statement in S.metadata(schema):
        cur.execute(statement)
    conn.commit()


def loaded_batches(conn: Any, schema: str, batch_ids: list[int]) -> set[int]:
    if not batch_ids:
        return set()
    cur = conn.cursor()
    cur.execute(S.loaded(schema, len(batch_ids)), batch_ids)
    found = {int(r[0]) for r in cur.fetchall()}
    conn.commit()
    return found


def schema_of(config: dict[str, Any], client_id: int) -> str:
    schema = config.get("schema")
    return str(schema).lower() if schema else f"skein_{client_id}"
