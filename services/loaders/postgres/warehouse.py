"""Loading one lease into Postgres: what runs when, in the lease's one transaction. The
bookkeeping tables first (their own short transaction), then the lease's events planned and
handed to ``chunks.ChunkMerger`` chunk by chunk, the rejected records and the batch ids in
``_sdc_loads`` with the rows (exactly once).

The SQL is ``statements.py`` (type mapping, DDL, activation, bookkeeping), ``staging.py`` (COPY
into a staging table) and ``merge.py`` (a segment's set-based merge); the merge thread is
``chunks.py``; sessions are ``connection.py``.
"""

from __future__ import annotations

from typing import Any

import psycopg2
import psycopg2.errors

from services.loaders.core import faults
from services.loaders.core.plan import LeaseLoad, PlanBuilder
from services.loaders.core.reader import RecordText
from services.loaders.core.shape import TableShape
from services.loaders.core.types import ColumnType
from services.loaders.postgres.chunks import CHUNK_ROWS, ChunkMerger
from services.loaders.postgres.connection import Connection
from services.loaders.postgres.statements import (
    INLINE,
    PLAIN_INLINE,
    RULES,
    create_metadata,
    existing_shapes,
    record_loads,
    record_rejections,
    render,
    select_loaded,
)


def ensure_metadata(conn: Connection, schema: str) -> None:
    """The schema and the two bookkeeping tables, in their own short transaction (concurrent
    loads of one client's different tables would otherwise race on CREATE ... IF NOT EXISTS).

    The advisory lock orders them, but a transaction that waited on it may still check the
    catalogs as they were before the other committed (an advisory lock does not refresh the
    catalog snapshot) and collide on the catalog's unique index: it tries once more."""
    for attempt in (1, 2):
        try:
            _create_metadata(conn, schema)
            return
        except psycopg2.errors.UniqueViolation:
            if attempt == 2:
                raise


def _create_metadata(conn: Connection, schema: str) -> None:
    with conn, conn.cursor() as cur:
        create_metadata(cur, schema)


def loaded_batches(conn: Connection, schema: str, batch_ids: list[int]) -> set[int]:
    """Which of ``batch_ids`` are already in ``_sdc_loads``. The query names ``_sdc_rejected``
    too, so a missing bookkeeping table fails it (``UndefinedTable``) instead of a load later:
    ``already_loaded`` then creates them (``ensure_metadata``) and asks again. One round trip
    per lease where the tables exist, which is every lease but a client's first."""
    with conn, conn.cursor() as cur:
        return select_loaded(cur, schema, batch_ids)


def already_loaded(conn: Connection, schema: str, batch_ids: list[int]) -> set[int]:
    """``loaded_batches``, the bookkeeping tables (and the schema) created first if missing."""
    try:
        return loaded_batches(conn, schema, batch_ids)
    except (psycopg2.errors.UndefinedTable, psycopg2.errors.InvalidSchemaName):
        ensure_metadata(conn, schema)
        return loaded_batches(conn, schema, batch_ids)


def plan_builder(table_source: str, shapes: dict[str, TableShape], batched_at: str) -> PlanBuilder:
    """How this loader stages a lease's records: compiled plans with ``render`` inlined (and its
    plain records' rendering), run natively where they can (``core.native``: it renders as
    ``render`` does), root rows numbered by their line (they may be COPY'd straight in), every
    row's ``_sdc_batched_at`` the load's."""
    return PlanBuilder(
        table_source,
        RULES,
        render,
        shapes,
        inline=INLINE,
        plain_inline=PLAIN_INLINE,
        implicit_row=True,
        batched_at=batched_at,
        native_plans=True,
    )


def load(
    conn: Connection,
    schema: str,
    work: LeaseLoad,
    *,
    chunk_rows: int = CHUNK_ROWS,
    straight_in: bool = True,
) -> tuple[int, int]:
    """Load a lease's batches in ONE transaction together with their ids in ``_sdc_loads``.

    Returns (rows written, records rejected). A batch id already recorded (another loader, or
    this one before a crash) makes the whole transaction roll back as already loaded.
    ``chunk_rows`` parent rows are merged at a time; ``straight_in=False``: every chunk merges
    (``ChunkMerger``).
    """
    with conn, conn.cursor() as cur:
        root = RULES.table(work.table_source)
        shapes = existing_shapes(cur, schema, work.table_source)
        cur.execute("SELECT now()")  # the transaction's time: every row's _sdc_batched_at
        (now,) = cur.fetchone() or (None,)
        batched_at = render(ColumnType.TIMESTAMP, now.isoformat())
        builder = plan_builder(work.table_source, shapes, batched_at)
        merger = ChunkMerger(conn, schema, shapes, straight_in=straight_in)
        try:
            segments = builder.segments

            def staged() -> int:  # rows of the current chunk
                return len(segments[-1].root.spill) if segments else 0

            for event in work.events:
                if isinstance(event, RecordText):  # a chunk's worth of its lines at a time
                    start = event.start
                    while start < event.end:
                        room = max(1, chunk_rows - staged())
                        start = builder.feed_text(event.text, start, event.end, room)
                        if staged() >= chunk_rows:
                            merger.cut(builder, root, final=False)
                    continue
                builder.feed(event)
                if staged() >= chunk_rows:
                    merger.cut(builder, root, final=False)
            merger.cut(builder, root, final=True)
            written = merger.wait()
            record_rejections(cur, schema, work.table_source, builder.rejected, work.batch_ids)
            counts = work.batch_records or [0] * len(work.batch_ids)
            record_loads(cur, schema, work.table_source, work.lease_token, work.batch_ids, counts)
            faults.hit("before_commit")
        finally:
            merger.close()
            builder.close()
    return written, len(builder.rejected)


def schema_of(config: dict[str, Any], client_id: int) -> str:
    schema = config.get("schema")
    return str(schema) if schema else f"skein_{client_id}"
