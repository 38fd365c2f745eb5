"""Loading one lease into Postgres: DDL, COPY into staging, one set-based merge per table, the
batch ids recorded in the same transaction (exactly once). Identifiers are always quoted with
``psycopg2.sql.Identifier``; values travel as parameters or through COPY, never as SQL text.
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any

import psycopg2
import psycopg2.errors
import psycopg2.extensions
from psycopg2 import sql

from services.loaders.core import errors, faults
from services.loaders.core.errors import (
    LoadError,
    PermanentError,
    TransientError,
)
from services.loaders.core.names import NameRules, starts_with_pattern
from services.loaders.core.plan import (
    BATCHED_AT,
    PRIMARY_KEY,
    ROW,
    SEQUENCE,
    SOURCE_KEY,
    TABLE_VERSION,
    LeaseLoad,
    PlanBuilder,
    Rejection,
    Segment,
    Spill,
    Staged,
)
from services.loaders.core.shape import TableShape
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
Connection = psycopg2.extensions.connection


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


def classify(exc: BaseException) -> LoadError:
    """Whether a Postgres failure is worth retrying (``core.errors.classify`` with its hook)."""
    return errors.classify(exc, _driver_error)


def _driver_error(exc: BaseException) -> LoadError | None:
    if isinstance(exc, psycopg2.OperationalError | psycopg2.InterfaceError):
        return TransientError(f"warehouse unavailable: {str(exc).strip()}")
    if isinstance(
        exc,
        psycopg2.errors.InsufficientPrivilege
        | psycopg2.errors.InvalidPassword
        | psycopg2.errors.InvalidAuthorizationSpecification
        | psycopg2.errors.DeadlockDetected
        | psycopg2.errors.SerializationFailure
        | psycopg2.errors.LockNotAvailable
        | psycopg2.errors.QueryCanceled
        | psycopg2.errors.AdminShutdown
        | psycopg2.errors.DiskFull
        | psycopg2.errors.OutOfMemory
        | psycopg2.errors.TooManyConnections,
    ):
        return TransientError(f"warehouse refused for now: {str(exc).strip()}")
    if isinstance(exc, psycopg2.Error):
        return PermanentError(f"warehouse rejected the load: {str(exc).strip()}")
    return None


def ident(*parts: str) -> sql.Identifier:
    return sql.Identifier(*parts)


def bound_ident(cur: Any, *parts: str) -> sql.SQL:
    """A quoted name for a statement that also takes parameters: psycopg2 reads every ``%`` in
    such a statement as a placeholder, so a name's own ``%`` (a table ``x%s``) is doubled."""
    return sql.SQL(ident(*parts).as_string(cur).replace("%", "%%"))


def ensure_metadata(conn: Connection, schema: str) -> None:
    """The schema and the two bookkeeping tables, in their own short transaction (concurrent
    loads of one client's different tables would otherwise race on CREATE ... IF NOT EXISTS)."""
    with conn, conn.cursor() as cur:
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


def loaded_batches(conn: Connection, schema: str, batch_ids: list[int]) -> set[int]:
    with conn, conn.cursor() as cur:
        cur.execute(
            sql.SQL("SELECT batch_id FROM {} WHERE batch_id = ANY(%s)").format(
                bound_ident(cur, schema, LOADS)
            ),
            (batch_ids,),
        )
        return {r[0] for r in cur.fetchall()}


def existing_shapes(cur: Any, schema: str, source: str) -> dict[str, TableShape]:
    """The table of root ``source`` and its subtables as they are now, with their primary keys
    (and maybe tables of other roots whose names start alike: ``PlanBuilder.is_subtable``)."""
    table = RULES.table(source)
    like = starts_with_pattern(RULES.subtable_prefix(source))
    cur.execute(
        """SELECT c.table_name, c.column_name, c.data_type
           FROM information_schema.columns c
           WHERE c.table_schema = %s AND (c.table_name = %s OR c.table_name LIKE %s)
           ORDER BY c.table_name, c.ordinal_position""",
        (schema, table, like),
    )
    shapes: dict[str, TableShape] = {}
    for name, column, data_type in cur.fetchall():
        shape = shapes.setdefault(name, TableShape(name, exists=True))
        shape.columns[column] = FROM_SQL.get(data_type, ColumnType.TEXT)
        if data_type not in NATIVE_TYPES:
            shape.foreign.add(column)
    cur.execute(
        """SELECT tc.table_name, array_agg(k.column_name::text ORDER BY k.ordinal_position)
           FROM information_schema.table_constraints tc
           JOIN information_schema.key_column_usage k
             ON k.constraint_name = tc.constraint_name AND k.table_schema = tc.table_schema
                AND k.table_name = tc.table_name
           WHERE tc.table_schema = %s AND tc.constraint_type = 'PRIMARY KEY'
             AND tc.table_name = %s
           GROUP BY tc.table_name""",
        (schema, table),
    )
    for name, columns in cur.fetchall():
        shapes[name].primary_key = tuple(columns)
    return shapes


def _column_defs(shape: TableShape, columns: Iterable[str]) -> sql.Composed:
    return sql.SQL(", ").join(
        sql.SQL("{} {}").format(ident(c), sql.SQL(SQL_TYPES[shape.columns[c]])) for c in columns
    )


def apply_ddl(cur: Any, schema: str, shape: TableShape, key: tuple[str, ...] | None) -> None:
    """Create the table, add its new columns, widen columns in place. ``key``: primary key
    columns for a root table (None for a subtable, which gets an index on its source keys)."""
    table = ident(schema, shape.name)
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


class ChunkStream(io.RawIOBase):
    """A file-like view of an iterator of byte chunks, for ``copy_expert``."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buffer = b""

    def readable(self) -> bool:
        return True

    def readinto(self, target: Any) -> int:
        while not self._buffer:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._buffer = chunk
        size = min(len(target), len(self._buffer))
        target[:size] = self._buffer[:size]
        self._buffer = self._buffer[size:]
        return size


def copy_spill(cur: Any, table: sql.Composable, staged: Staged) -> None:
    """COPY the staged rows (in the spill's column order) into ``table``."""
    order = staged.order
    copy = sql.SQL("COPY {} ({}) FROM STDIN WITH (FORMAT csv)").format(
        table, sql.SQL(", ").join(map(ident, order))
    )
    # Large reads: this runs on the merge thread, and each read waits for the parsing thread
    # to yield the GIL; few reads keep COPY from stalling on it.
    spill = ChunkStream(staged.spill.text(len(order)))
    cur.copy_expert(copy.as_string(cur), spill, size=COPY_READ_BYTES)


def stage(cur: Any, staged: Staged, name: str) -> list[str]:
    """A temporary staging table in the spill's column order, filled by COPY; its data columns.

    Root rows without a ``_sdc_row`` field (``PlanBuilder(implicit_row=True)``) are numbered
    by an identity column in the order COPY reads them: their line numbers."""
    order = staged.order
    shape = staged.shape
    defs = [
        sql.SQL("{} {}").format(
            ident(c), sql.SQL("bigint" if c == ROW else SQL_TYPES[shape.columns[c]])
        )
        for c in order
    ]
    if ROW not in staged.index:
        defs.append(sql.SQL("{} bigint GENERATED ALWAYS AS IDENTITY").format(ident(ROW)))
    cur.execute(
        sql.SQL("CREATE TEMP TABLE {} ({}) ON COMMIT DROP").format(
            ident(name), sql.SQL(", ").join(defs)
        )
    )
    copy_spill(cur, ident(name), staged)
    return [c for c in order if c != ROW]


def merge_segment(cur: Any, schema: str, segment: Segment, number: int, keep_won: bool) -> int:
    """Upsert (greater sequence wins) or append (deterministic key) the segment's rows, then
    replace the subtable rows of every parent row written. Returns the parent rows written.

    ``keep_won``: collect the keys of the parent rows written in ``won_<number>`` (for
    subtables); without subtables that bookkeeping is skipped."""
    root = segment.root
    keys = list(segment.key_columns)
    stg, win, won = f"stg_{number}", f"win_{number}", f"won_{number}"
    columns = stage(cur, root, stg)
    table = ident(schema, root.shape.name)
    key_list = sql.SQL(", ").join(map(ident, keys))
    cur.execute(
        sql.SQL("SELECT EXISTS (SELECT 1 FROM {} GROUP BY {} HAVING count(*) > 1)").format(
            ident(stg), key_list
        )
    )
    if cur.fetchone()[0]:  # a key more than once: keep its greatest sequence (then last)
        cur.execute(
            sql.SQL(
                """CREATE TEMP TABLE {win} ON COMMIT DROP AS
                   SELECT DISTINCT ON ({keys}) * FROM {stg}
                   ORDER BY {keys}, {seq} DESC, {row} DESC"""
            ).format(
                win=ident(win), keys=key_list, stg=ident(stg), seq=ident(SEQUENCE), row=ident(ROW)
            )
        )
    else:
        win = stg
    stamped = [] if BATCHED_AT in columns else [BATCHED_AT]  # else staged: the load's now()
    column_list = sql.SQL(", ").join(map(ident, [*columns, *stamped]))
    selected = sql.SQL(", ").join([*map(ident, columns), *(sql.SQL("now()") for _ in stamped)])
    if segment.key_names:
        updates = sql.SQL(", ").join(
            sql.SQL("{} = EXCLUDED.{}").format(ident(c), ident(c))
            for c in [*columns, *stamped]
            if c not in keys
        )
        conflict: sql.Composable = sql.SQL(
            "DO UPDATE SET {} WHERE t.{seq} IS NULL OR t.{seq} <= EXCLUDED.{seq}"
        ).format(updates, seq=ident(SEQUENCE))
    else:
        conflict = sql.SQL("DO NOTHING")
    insert = sql.SQL(
        """INSERT INTO {table} AS t ({columns}) SELECT {selected} FROM {win}
           ON CONFLICT ({keys}) {conflict}"""
    ).format(
        table=table,
        columns=column_list,
        selected=selected,
        win=ident(win),
        keys=key_list,
        conflict=conflict,
    )
    if not keep_won:
        cur.execute(insert)
        return int(cur.rowcount)
    cur.execute(
        sql.SQL("CREATE TEMP TABLE {} ON COMMIT DROP AS SELECT {} FROM {} LIMIT 0").format(
            ident(won), key_list, ident(win)
        )
    )
    cur.execute(
        sql.SQL("WITH up AS ({insert} RETURNING {keys}) INSERT INTO {won} SELECT * FROM up").format(
            insert=insert, keys=key_list, won=ident(won)
        )
    )
    written = int(cur.rowcount)
    for index, child in enumerate(segment.children.values()):
        _replace_children(cur, schema, child, keys, f"{stg}_c{index}", win, won)
    return written


def _replace_children(
    cur: Any, schema: str, child: Staged, keys: list[str], stg: str, win: str, won: str
) -> None:
    columns = stage(cur, child, stg)
    table = ident(schema, child.shape.name)
    match = sql.SQL(" AND ").join(
        sql.SQL("c.{} = w.{}").format(ident(SOURCE_KEY + k), ident(k)) for k in keys
    )
    cur.execute(
        sql.SQL("DELETE FROM {table} c USING {won} w WHERE {match}").format(
            table=table, won=ident(won), match=match
        )
    )
    on_keys = sql.SQL(" AND ").join(sql.SQL("p.{} = w.{}").format(ident(k), ident(k)) for k in keys)
    cur.execute(
        sql.SQL(
            """INSERT INTO {table} ({columns})
               SELECT {selected} FROM {stg} s
               JOIN {win} p ON p.{row} = s.{row}
               JOIN {won} w ON {on_keys}"""
        ).format(
            table=table,
            columns=sql.SQL(", ").join(map(ident, [*columns, BATCHED_AT])),
            selected=sql.SQL(", ").join(
                [*(sql.SQL("s.{}").format(ident(c)) for c in columns), sql.SQL("now()")]
            ),
            stg=ident(stg),
            win=ident(win),
            won=ident(won),
            row=ident(ROW),
            on_keys=on_keys,
        )
    )


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


def _has_subtables(shapes: dict[str, TableShape], builder: PlanBuilder) -> bool:
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


COPY_READ_BYTES = 8 << 20
CHUNK_ROWS = 8192  # parent rows merged at a time, while the next ones are parsed
# After a chunk's rows could not go straight into their table (a key already there), that
# table's next chunks merge without trying: updates tend to come in runs.
DIRECT_PAUSE_CHUNKS = 32
# (dsn, schema, table) -> chunks to merge without trying
_DIRECT_PAUSE: OrderedDict[tuple[str, str, str], int] = OrderedDict()
_DIRECT_LOCK = threading.Lock()


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

    def __init__(self, conn: Connection, schema: str, shapes: dict[str, TableShape]) -> None:
        self.conn = conn
        self.schema = schema
        self.shapes = shapes
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pg-merge")
        self._pending: list[Future[int]] = []
        self._open: list[Segment] = []  # chunks handed over and not yet merged (to close)
        self._written = 0
        self._chunks = 0
        self._closed_segments = 0
        self.direct_failed = False  # set by the merge thread, read here
        # Which destination: the same schema and table names on two servers are two tables.
        self._where = (conn.dsn, schema)

    def cut(self, builder: PlanBuilder, root: str, final: bool) -> None:
        """Hand over every staged row so far; ``final``: the lease's events are all read."""
        self._check()
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
        keep_won = bool(segment.children) or _has_subtables(self.shapes, builder)
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

        self._pending.append(self._pool.submit(run))

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
        """Stop: let a running statement finish (the connection is shared), drop the rest."""
        self._pool.shutdown(wait=True, cancel_futures=True)
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


def load(conn: Connection, schema: str, work: LeaseLoad) -> tuple[int, int]:
    """Load a lease's batches in ONE transaction together with their ids in ``_sdc_loads``.

    Returns (rows written, records rejected). A batch id already recorded (another loader, or
    this one before a crash) makes the whole transaction roll back as already loaded.
    """
    with conn, conn.cursor() as cur:
        root = RULES.table(work.table_source)
        shapes = existing_shapes(cur, schema, work.table_source)
        cur.execute("SELECT now()")  # the transaction's time: every row's _sdc_batched_at
        (now,) = cur.fetchone() or (None,)
        batched_at = render(ColumnType.TIMESTAMP, now.isoformat())
        builder = PlanBuilder(
            work.table_source,
            RULES,
            render,
            shapes,
            inline=INLINE,
            implicit_row=True,
            batched_at=batched_at,
        )
        merger = ChunkMerger(conn, schema, shapes)
        try:
            segments = builder.segments
            for event in work.events:
                builder.feed(event)
                if segments and len(segments[-1].root.spill) >= CHUNK_ROWS:
                    merger.cut(builder, root, final=False)
            merger.cut(builder, root, final=True)
            written = merger.wait()
            record_rejections(cur, schema, work.table_source, builder.rejected, work.batch_ids)
            counts = work.batch_records or [0] * len(work.batch_ids)
            cur.execute(
                sql.SQL(
                    "INSERT INTO {} (batch_id, table_name, lease_token, records) "
                    "SELECT unnest(%s::bigint[]), %s, %s, unnest(%s::bigint[])"
                ).format(bound_ident(cur, schema, LOADS)),
                (work.batch_ids, work.table_source, work.lease_token, counts),
            )
            faults.hit("before_commit")
        finally:
            merger.close()
            builder.close()
    return written, len(builder.rejected)


def schema_of(config: dict[str, Any], client_id: int) -> str:
    schema = config.get("schema")
    return str(schema) if schema else f"skein_{client_id}"
