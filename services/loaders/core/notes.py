"""What a load did besides writing rows, for its ack: schema changes and rejected records.

The runner opens a :func:`recording` around each lease's load; warehouse code notes into it
(:func:`note_shape` just before it applies a table's DDL, :func:`note_rejection` where a record
goes to ``_sdc_rejected``), from the loading thread or a thread that runs with a copy of its
context. On success the notes ride on the ack (``report``): the spool writes them to the
schema log and the kept copy of rejected records, with the ``schema.changed`` and
``records.rejected`` events, in the ack's transaction. A failed load's notes are dropped with
it. Bounded: at most ``MAX_CHANGES`` changes and ``MAX_REJECTIONS`` rejected records (each cut
to ``RECORD_CHARS``) a lease; every rejection is counted.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from services.loaders.core.shape import TableShape

MAX_CHANGES = 200
MAX_REJECTIONS = 100
RECORD_CHARS = 2000


@dataclass
class Notes:
    schema_changes: list[dict[str, Any]] = field(default_factory=list)
    rejections: list[dict[str, str]] = field(default_factory=list)
    rejected: int = 0

    def report(self) -> dict[str, Any]:
        return {"schema_changes": self.schema_changes, "rejections": self.rejections}


_CURRENT: ContextVar[Notes | None] = ContextVar("skein_load_notes", default=None)


@contextmanager
def recording() -> Iterator[Notes]:
    notes = Notes()
    token = _CURRENT.set(notes)
    try:
        yield notes
    finally:
        _CURRENT.reset(token)


def _change(notes: Notes, entry: dict[str, Any]) -> None:
    if len(notes.schema_changes) < MAX_CHANGES:
        notes.schema_changes.append(entry)


def note_shape(shape: TableShape) -> None:
    """The changes ``shape`` is about to make: call before its DDL is applied."""
    notes = _CURRENT.get()
    if notes is None:
        return
    if not shape.exists:
        _change(
            notes,
            {
                "change": "table_created",
                "warehouse_table": shape.name,
                "after": {c: k.name.lower() for c, k in shape.columns.items()},
            },
        )
        return
    for column, kind in shape.added.items():
        split = next((c for c in shape.columns if column.startswith(c + "__")), None)
        _change(
            notes,
            {
                "change": "column_split" if split else "column_added",
                "warehouse_table": shape.name,
                "column": column,
                "before": None if split is None else shape.columns[split].name.lower(),
                "after": kind.name.lower(),
            },
        )
    for column, kind in shape.widened.items():
        was = shape.was.get(column)
        _change(
            notes,
            {
                "change": "column_widened",
                "warehouse_table": shape.name,
                "column": column,
                "before": None if was is None else was.name.lower(),
                "after": kind.name.lower(),
            },
        )


def note_column(table: str, change: str, column: str | None, before: Any, after: Any) -> None:
    """A change a warehouse describes in its own terms (BigQuery's fields)."""
    notes = _CURRENT.get()
    if notes is not None:
        _change(
            notes,
            {
                "change": change,
                "warehouse_table": table,
                "column": column,
                "before": before,
                "after": after,
            },
        )


def note_rejection(record: bytes | str, reason: str) -> None:
    notes = _CURRENT.get()
    if notes is None:
        return
    notes.rejected += 1
    if len(notes.rejections) < MAX_REJECTIONS:
        text = record.decode("utf-8", "replace") if isinstance(record, bytes) else record
        notes.rejections.append(
            {"record": text[:RECORD_CHARS].replace("\x00", ""), "reason": reason[:RECORD_CHARS]}
        )
