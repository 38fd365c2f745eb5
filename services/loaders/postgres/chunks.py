"""Merging a Postgres lease chunk by chunk (``ChunkMerger``): on a second thread, in order and in
the lease's one transaction, while the loading thread parses and stages the next chunk; a chunk
of new rows is COPY'd straight into its table where that gives what the merge would.

``warehouse.load`` feeds it; the SQL it runs is ``statements.py`` (DDL, re-keying, activation,
stale child rows), ``staging.py`` (COPY) and ``merge.py`` (a segment's set-based merge).
"""

from __future__ import annotations

import contextvars
import threading
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any

import psycopg2
import psycopg2.errors
from psycopg2 import sql

from services.loaders.core.plan import PlanBuilder, Segment, Staged
from services.loaders.core.shape import TableShape
from services.loaders.core.spill import Spill
from services.loaders.core.system_columns import ROW
from services.loaders.postgres.connection import Connection
from services.loaders.postgres.merge import merge_segment
from services.loaders.postgres.staging import copy_spill
from services.loaders.postgres.statements import (
    activate,
    apply_ddl,
    delete_stale_children,
    has_subtables,
    ident,
    rekey,
    stale_children,
    versioned_tables,
)

CHUNK_ROWS = 8192  # parent rows merged at a time, while the next ones are parsed
# After a chunk's rows could not go straight into their table (a key already there), that
# table's next chunks merge without trying: updates tend to come in runs.
DIRECT_PAUSE_CHUNKS = 32
# (dsn, schema, table) -> chunks to merge without trying
_DIRECT_PAUSE: OrderedDict[tuple[str, str, str], int] = OrderedDict()
_DIRECT_LOCK = threading.Lock()
# Each loading thread's merge thread, kept across its loads (starting a thread per load was
# ~8 % of a loader's time on small loads).
_MERGE_THREAD = threading.local()


def _merge_pool() -> ThreadPoolExecutor:
    """The calling thread's own merge thread (one at a time: a lease's chunks merge in order)."""
    pool: ThreadPoolExecutor | None = getattr(_MERGE_THREAD, "pool", None)
    if pool is None:
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pg-merge")
        _MERGE_THREAD.pool = pool
    return pool


class _Recorder:
    """A stand-in cursor that keeps the statements it is given (DDL composed on this thread,
    executed in order on the merge thread)."""

    def __init__(self) -> None:
        self.statements: list[tuple[Any, Any]] = []

    def execute(self, query: Any, args: Any = None) -> None:
        self.statements.append((query, args))


class ChunkMerger:
    """Merges a lease's staged rows chunk by chunk on a second thread, in order, in the lease's
    one transaction, while this thread parses and stages the next chunk.

    Merging a segment's rows in consecutive chunks gives the same rows as merging them at once:
    within a chunk the greatest sequence (then the latest row) wins, and a later chunk
    overwrites only where its sequence is at least as great, exactly the tie-break of the whole.
    Every decision that reads the table shapes (DDL, subtables, activations) is taken here, on
    the parsing thread; the merge thread only executes statements, so shapes are never read
    while they change.
    """

    def __init__(
        self,
        conn: Connection,
        schema: str,
        shapes: dict[str, TableShape],
        *,
        straight_in: bool = True,
    ) -> None:
        self.conn = conn
        self.schema = schema
        self.shapes = shapes
        self.straight_in = straight_in  # False: every chunk merges (``_copy_direct`` untried)
        self._pool = _merge_pool()
        self._pending: list[Future[int]] = []
        self._open: list[Segment] = []  # chunks handed over and not yet merged (to close)
        self._written = 0
        self._chunks = 0
        self._closed_segments = 0
        self.direct_failed = False  # set by the merge thread, read here
        self._final = False  # the lease's events are all read: nothing left to overlap with
        # Which destination: the same schema and table names on two servers are two tables.
        self._where = (conn.dsn, schema)

    def cut(self, builder: PlanBuilder, root: str, final: bool) -> None:
        """Hand over every staged row so far; ``final``: the lease's events are all read."""
        self._check()
        self._final = final
        segments = builder.segments
        for number in range(self._closed_segments, len(segments)):
            segment = segments[number]
            closed = final or number < len(segments) - 1
            if len(segment.root.spill):
                self._submit_chunk(segment, builder)
            if closed:
                if segment.activate_version is not None:
                    tables = versioned_tables(self.shapes, root, builder)
                    version = segment.activate_version
                    self._submit(lambda cur, t=tables, v=version: activate(cur, self.schema, t, v))
                self._closed_segments = number + 1

    def _submit_chunk(self, segment: Segment, builder: PlanBuilder) -> None:
        shape = segment.root.shape
        ddl = _Recorder()
        apply_ddl(ddl, self.schema, shape, segment.key_columns)
        for child in segment.children.values():
            apply_ddl(ddl, self.schema, child.shape, None)
        if shape.primary_key != segment.key_columns:  # key names changed: rare, done in line
            self.wait()
            with self.conn.cursor() as cur:
                for query, args in ddl.statements:
                    cur.execute(query, args)
                rekey(cur, self.schema, shape, segment.key_columns)
            ddl.statements.clear()
        chunk = Segment(
            segment.key_names,
            segment.key_columns,
            _take(segment.root),
            {path: _take(child) for path, child in segment.children.items()},
        )
        keep_won = bool(segment.children) or has_subtables(self.shapes, builder)
        stale = stale_children(self.shapes, builder, segment) if keep_won else []
        number = self._chunks
        self._chunks += 1
        direct = self._try_direct(chunk) and not keep_won

        def merge(cur: Any) -> int:
            try:
                for query, args in ddl.statements:
                    cur.execute(query, args)
                if direct and self._copy_direct(cur, chunk):
                    return len(chunk.root.spill)
                written = merge_segment(cur, self.schema, chunk, number, keep_won)
                if keep_won:
                    delete_stale_children(
                        cur, self.schema, stale, chunk.key_columns, f"won_{number}"
                    )
                # pg_temp: only this session's temporary tables, never a table of that name
                # elsewhere on the search path.
                cur.execute(
                    sql.SQL("DROP TABLE IF EXISTS {}").format(
                        sql.SQL(", ").join(
                            ident("pg_temp", name)
                            for name in [
                                f"stg_{number}",
                                f"win_{number}",
                                f"won_{number}",
                                *(f"stg_{number}_c{i}" for i in range(len(chunk.children))),
                            ]
                        )
                    )
                )
                return written
            finally:
                chunk.close()

        self._open.append(chunk)
        self._submit(merge)

    def _try_direct(self, chunk: Segment) -> bool:
        """Whether to try this chunk's rows straight into the table (see ``_copy_direct``):
        rows numbered by line (nothing else to drop), and not soon after a try that failed."""
        if not self.straight_in:
            return False
        if ROW in chunk.root.index or chunk.root.shape.foreign.intersection(chunk.root.order):
            return False  # (a column of another type than ours: only the merge casts to it)
        table = (*self._where, chunk.root.shape.name)
        with _DIRECT_LOCK:  # the runner's workers load other tables at the same time
            if self.direct_failed:
                self.direct_failed = False
                _DIRECT_PAUSE[table] = DIRECT_PAUSE_CHUNKS
                _DIRECT_PAUSE.move_to_end(table)
                while len(_DIRECT_PAUSE) > 1000:
                    _DIRECT_PAUSE.popitem(last=False)
            paused = _DIRECT_PAUSE.get(table, 0)
            if paused:
                _DIRECT_PAUSE[table] = paused - 1
                return False
        return True

    def _copy_direct(self, cur: Any, chunk: Segment) -> bool:
        """COPY the chunk's rows into the table itself, in a savepoint: when none of their keys
        is in the table yet nor repeats among them (new rows, the common case of a growing
        table), that is exactly what the merge would write, at the cost of a plain COPY. A key
        that exists or repeats fails the primary key: roll back to the savepoint and merge.
        (``_sdc_batched_at`` is staged on every row; a chunk with subtable rows always merges.)
        """
        cur.execute("SAVEPOINT skein_direct")
        try:
            copy_spill(cur, ident(self.schema, chunk.root.shape.name), chunk.root)
        except psycopg2.errors.UniqueViolation:
            cur.execute("ROLLBACK TO SAVEPOINT skein_direct")
            self.direct_failed = True
            return False
        cur.execute("RELEASE SAVEPOINT skein_direct")
        return True

    def _submit(self, step: Any) -> None:
        running = [f for f in self._pending if not f.done()]
        if len(running) >= 2:  # bounded: parsing may run at most two chunks ahead
            wait(running[:1])

        def run() -> int:
            with self.conn.cursor() as cur:
                return int(step(cur) or 0)

        if self._final and not running:
            # Nothing left to parse beside it and nothing merging: run it here. A small load
            # (one chunk, the many-small-tables case) then never crosses to the merge thread
            # and back, a handoff that cost ~0.5 ms of a ~4 ms load on a busy machine.
            done: Future[int] = Future()
            try:
                done.set_result(run())
            except BaseException as exc:
                done.set_exception(exc)
            self._pending.append(done)
            return
        # In a copy of this thread's context: the load's notes (schema changes) are noted there.
        self._pending.append(self._pool.submit(contextvars.copy_context().run, run))

    def _check(self) -> None:
        """Raise a merge failure as soon as it is known (the transaction is lost anyway)."""
        for future in self._pending:
            if future.done() and future.exception() is not None:
                self.wait()

    def wait(self) -> int:
        """Wait for every chunk; the rows written so far, or the first failure."""
        failure: BaseException | None = None
        for future in self._pending:
            try:
                self._written += future.result()
            except BaseException as exc:
                failure = failure or exc
        self._pending.clear()
        if failure is not None:
            raise failure
        return self._written

    def close(self) -> None:
        """Stop: let a running statement finish (the connection is shared), drop the rest (the
        merge thread stays for this thread's next load)."""
        for future in self._pending:
            future.cancel()
        wait(self._pending)
        self._pending.clear()
        for chunk in self._open:  # those never merged were never closed
            chunk.close()
        self._open.clear()


def _take(staged: Staged) -> Staged:
    """The rows staged so far, leaving ``staged`` an empty spill with the same column order.
    The shape is a copy: the merge thread reads its column types while parsing goes on."""
    shape = staged.shape
    frozen = TableShape(
        shape.name, dict(shape.columns), shape.exists, shape.primary_key, foreign=shape.foreign
    )
    taken = Staged(frozen, staged.spill, list(staged.order), dict(staged.index))
    staged.spill = Spill()
    return taken
