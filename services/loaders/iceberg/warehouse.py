"""One lease's load into an Iceberg table, in one catalog commit.

1. The table is read; the batch ids are looked for in its snapshots' summaries: all there →
   nothing to do (a crash between commit and ack); some → another lease committed them
   (transient: the next lease skips those).
2. The records are planned against its schema (``staging``: fields, splits, segments,
   rejections) and read back as typed rows.
3. Rejected records go to ``_sdc_rejected`` (their own, idempotent commit: ``tables.py``).
4. **One transaction**: the schema grows (``union_by_name``: new fields at any depth, ``int`` →
   ``long``, ``float`` → ``double``); per segment a re-key check, the merge (stored rows of
   the winning keys deleted, the winners appended) and an ``activate_version``'s delete of
   older versions; the key in the table's properties. Every snapshot it makes carries the
   batch ids (``statements.summary``); a lease that changes no row commits an empty append to
   record them. It commits as one metadata swap: readers see all of it or none.
5. A lost race (``CommitFailedException``: another writer swapped the metadata first) starts
   again at 1 against the table as it now is, up to ``commit_attempts`` times.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
from pyiceberg.exceptions import CommitFailedException
from pyiceberg.expressions import AlwaysTrue, BooleanExpression, IsNull
from pyiceberg.io.pyarrow import schema_to_pyarrow
from pyiceberg.table import DataScan, Table, Transaction

from common.wire import Header
from services.loaders.bigquery.plan import Segment
from services.loaders.bigquery.schema import TableSchema
from services.loaders.core import faults, notes
from services.loaders.core.errors import PermanentError, TransientError
from services.loaders.core.reader import Record
from services.loaders.core.system_columns import PRIMARY_KEY, SEQUENCE, TABLE_VERSION
from services.loaders.iceberg import staging, statements, tables
from services.loaders.iceberg.connection import Session
from services.loaders.iceberg.staging import NAMES, Staged


class AlreadyLoaded(Exception):
    """Every batch of the lease is in the table already: nothing to do."""


@dataclass
class LeaseWork:
    client_id: int
    table_source: str
    batch_ids: list[int]
    lease_token: str

    @property
    def summary(self) -> dict[str, str]:
        return statements.summary(self.batch_ids, self.lease_token)


def check_not_loaded(table: Table | None, batch_ids: list[int], found: set[int]) -> None:
    """Raise :class:`AlreadyLoaded` when the table holds every batch, ``TransientError`` when
    it holds some (``found`` gets them, for the next lease to skip)."""
    if table is None:
        return
    done = statements.committed(table.metadata, batch_ids)
    if done == set(batch_ids):
        found.update(done)
        raise AlreadyLoaded
    if done:
        found.update(done)
        raise TransientError(f"batches committed concurrently: {sorted(done)} already loaded")


def load_events(
    session: Session,
    work: LeaseWork,
    events: Iterable[Header | Record],
    attempts: int,
    found: set[int],
) -> tuple[int, int]:
    """Plan the lease's events against the table and commit them: (rows, rejected records).
    ``found`` gets the batch ids the table turned out to hold already."""
    tables.ensure_ready(session)
    name = NAMES.table(work.table_source)
    table = tables.find(session, name)
    try:
        check_not_loaded(table, work.batch_ids, found)
    except AlreadyLoaded:
        return 0, 0
    schema = statements.fields_of(name, table.schema()) if table else TableSchema(name)
    plan = staging.lease_plan(work.table_source, schema)
    try:
        for event in events:
            plan.feed(event)
        staged = staging.read_back(plan)
    finally:
        plan.close()
    segments = plan.segments
    if not plan.staged_rows and not any(s.activate_version is not None for s in segments):
        return 0, 0
    tables.write_rejected(
        session, work.table_source, work.batch_ids, work.lease_token, staged.rejected
    )
    for _ in range(attempts):
        try:
            commit(session, table, plan.schema, segments, staged, work)
        except CommitFailedException:
            table = tables.find(session, name)
            try:
                check_not_loaded(table, work.batch_ids, found)
            except AlreadyLoaded:
                return 0, 0
            continue
        found.update(work.batch_ids)
        return plan.staged_rows - plan.rejected, plan.rejected
    raise TransientError(f"{attempts} commits to {name} lost to concurrent writers")


def commit(
    session: Session,
    table: Table | None,
    schema: TableSchema,
    segments: list[Segment],
    staged: Staged,
    work: LeaseWork,
) -> None:
    """The lease's changes to the table, in one transaction (see the module's docstring)."""
    final_key = _final_key(segments)
    if table is None:
        if not any(s.rows for s in segments):
            return  # only activations (and rejections) of a table never loaded
        desired = statements.iceberg_schema(schema, None)
        notes.note_column(
            schema.name,
            "table_created",
            None,
            None,
            {f.name: f.type_name.lower() for f in schema.fields.values()},
        )
        props = statements.key_property(final_key) if final_key else {}
        table = tables.create(session, schema.name, desired, props)
    previous_key = statements.key_of(table.properties)
    tx = table.transaction()
    _evolve(tx, schema)
    summary = work.summary
    snapshots = len(tx.table_metadata.snapshots)
    key = previous_key
    for segment in segments:
        rows = staged.segments.get(segment.number, [])
        if segment.rows and rows:
            if key is not None and key != segment.key_columns:
                _rekey(tx, table, schema.name, key, segment.key_columns, summary)
            key = segment.key_columns
            _merge(tx, table, segment.key_columns, rows, summary)
        if segment.activate_version is not None:
            _activate(tx, table, segment.activate_version, summary)
    if key is not None and key != previous_key:
        tx.set_properties(statements.key_property(key))
    if len(tx.table_metadata.snapshots) == snapshots:
        # Nothing changed a row (every record lost to a newer one): an empty append still
        # records the batch ids, so a retry finds them.
        arrow = schema_to_pyarrow(tx.table_metadata.schema())
        tx.append(arrow.empty_table(), snapshot_properties=summary)
    faults.hit("before_commit")
    tx.commit_transaction()


def _final_key(segments: list[Segment]) -> tuple[str, ...] | None:
    for segment in reversed(segments):
        if segment.rows:
            return segment.key_columns
    return None


def _evolve(tx: Transaction, schema: TableSchema) -> None:
    """New fields and widenings, staged in the transaction; noted for the schema log."""
    before = tx.table_metadata.schema()
    desired = statements.iceberg_schema(schema, before)
    with tx.update_schema() as update:
        update.union_by_name(desired)
    after = tx.table_metadata.schema()
    if after.schema_id == before.schema_id:
        return
    old = {f.name: f.field_type for f in before.fields}
    for column in after.fields:
        was = old.get(column.name)
        if was is None:
            notes.note_column(
                schema.name, "column_added", column.name, None, str(column.field_type)
            )
        elif was != column.field_type:
            change = "column_widened" if was.is_primitive else "column_added"
            notes.note_column(schema.name, change, column.name, str(was), str(column.field_type))


def _scan(
    tx: Transaction, table: Table, where: BooleanExpression, columns: tuple[str, ...] = ("*",)
) -> list[dict[str, Any]]:
    """Rows of the transaction's current state (what it staged so far included)."""
    scan = DataScan(
        table_metadata=tx.table_metadata, io=table.io, row_filter=where, selected_fields=columns
    )
    rows: list[dict[str, Any]] = scan.to_arrow().to_pylist()
    return rows


def _has(tx: Transaction, column: str) -> bool:
    return column in {f.name for f in tx.table_metadata.schema().fields}


def _merge(
    tx: Transaction,
    table: Table,
    key: tuple[str, ...],
    rows: list[dict[str, Any]],
    summary: dict[str, str],
) -> None:
    """Per key the greatest sequence wins; stored rows of winning keys are replaced."""
    append_only = key == (PRIMARY_KEY,)
    incoming = statements.latest(rows, key)
    columns = (*key, SEQUENCE) if _has(tx, SEQUENCE) else key
    stored = statements.stored_sequences(
        _scan(tx, table, statements.key_filter(key, list(incoming)), columns), key
    )
    won = statements.winners(incoming, stored, append_only)
    if not won:
        return
    replaced = [k for k in (statements.key_values(r, key) for r in won) if k in stored]
    if replaced:
        tx.delete(statements.key_filter(key, replaced), snapshot_properties=summary)
    arrow = schema_to_pyarrow(tx.table_metadata.schema())
    tx.append(pa.Table.from_pylist(won, schema=arrow), snapshot_properties=summary)


def _activate(tx: Transaction, table: Table, version: int, summary: dict[str, str]) -> None:
    """Full-table replication: the rows of older table versions go."""
    where = statements.older_versions(version, _has(tx, TABLE_VERSION))
    first = DataScan(
        table_metadata=tx.table_metadata, io=table.io, row_filter=where, limit=1
    ).to_arrow()
    if first.num_rows:
        tx.delete(where, snapshot_properties=summary)


def _rekey(
    tx: Transaction,
    table: Table,
    name: str,
    previous: tuple[str, ...],
    key: tuple[str, ...],
    summary: dict[str, str],
) -> None:
    """The table takes new key names, when its rows allow: going append-only, rows without a
    ``__sdc_primary_key`` get one; otherwise no stored key may be null or repeated."""
    if key == (PRIMARY_KEY,):
        missing = IsNull(term=PRIMARY_KEY)
        rows = _scan(tx, table, missing)
        if rows:
            for row in rows:
                row[PRIMARY_KEY] = str(uuid.uuid4())
            arrow = schema_to_pyarrow(tx.table_metadata.schema())
            tx.overwrite(
                pa.Table.from_pylist(rows, schema=arrow),
                overwrite_filter=missing,
                snapshot_properties=summary,
            )
        return
    if not all(_has(tx, c) for c in key):
        problem: str | None = "the new key's columns are not all in the table"
    else:
        problem = statements.rekey_problem(_scan(tx, table, AlwaysTrue(), key), key)
    if problem:
        raise PermanentError(
            f"key names of {name} changed from {list(previous)} to {list(key)} but the "
            f"existing rows cannot be re-keyed ({problem}); fix the rows or the key names, "
            "then retry the batch"
        )
