"""Staging a lease's rows in Postgres: a temporary table in the spill's column order, filled by
``COPY ... FROM STDIN`` straight from the spill file (``ChunkStream``), never through Python
rows."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

from psycopg2 import sql

from services.loaders.core.plan import Staged
from services.loaders.core.system_columns import ROW
from services.loaders.postgres.statements import (
    SQL_TYPES,
    ident,
)


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


COPY_READ_BYTES = 8 << 20
