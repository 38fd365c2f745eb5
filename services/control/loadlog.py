"""What loads changed besides rows: the schema log and the kept copy of rejected records
(migration 0021; written by the spool's ack from the loader's report)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from common import control

_SCHEMA_COLUMNS = (
    "change_id",
    "table_name",
    "warehouse_table",
    "change",
    "column_name",
    "before",
    "after",
    "batch_ids",
    "destination_type",
    "created_at",
)
_REJECTED_COLUMNS = ("rejection_id", "table_name", "record", "reason", "batch_ids", "created_at")


def _rows(columns: tuple[str, ...], rows: list[tuple[Any, ...]]) -> list[dict[str, Any]]:
    return [
        {
            k: (control.iso(v) if isinstance(v, datetime) else v)
            for k, v in zip(columns, r, strict=True)
        }
        for r in rows
    ]


def schema_log(
    conn: control.Connection,
    client_id: int,
    *,
    table: str | None = None,
    after: int = 0,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """The client's schema changes (of ``table``, when given), oldest first; a page past
    ``after``: what changed, the type before and after, the batches whose load made it."""
    with conn, conn.cursor() as cur:
        cur.execute(
            "SELECT change_id, table_name, warehouse_table, change, column_name, before, after,"
            " batch_ids, destination_type, created_at FROM schema_log"
            " WHERE client_id = %s AND (%s::text IS NULL OR table_name = %s) AND change_id > %s"
            " ORDER BY change_id LIMIT %s",
            (client_id, table, table, after, limit),
        )
        return _rows(_SCHEMA_COLUMNS, cur.fetchall())


def rejected(
    conn: control.Connection,
    client_id: int,
    *,
    table: str | None = None,
    since: datetime | None = None,
    after: int = 0,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """The client's rejected records with their reasons (up to 100 a load, each cut to 2,000
    characters; the destination's ``_sdc_rejected`` holds them all), oldest first."""
    with conn, conn.cursor() as cur:
        cur.execute(
            "SELECT rejection_id, table_name, record, reason, batch_ids, created_at"
            " FROM rejected_records WHERE client_id = %s"
            " AND (%s::text IS NULL OR table_name = %s)"
            " AND (%s::timestamptz IS NULL OR created_at >= %s) AND rejection_id > %s"
            " ORDER BY rejection_id LIMIT %s",
            (client_id, table, table, since, since, after, limit),
        )
        return _rows(_REJECTED_COLUMNS, cur.fetchall())
