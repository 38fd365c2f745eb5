"""The rows a load writes to its destination's bookkeeping tables in its own transaction
(pure): ``_sdc_rejected`` (each record it could not load, with the reason) and ``_sdc_loads``
(each batch it loaded, which makes the load exactly once). For the warehouses that insert them
with ``executemany`` (Redshift, Snowflake)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from services.loaders.core.plan import LeaseLoad, Rejection


def _same(text: str) -> str:
    return text


def rejected_rows(
    work: LeaseLoad,
    rejected: list[Rejection],
    batched_at: Any,
    text: Callable[[str], str] = _same,
) -> list[tuple[Any, ...]]:
    """(table source, record, reason, batch ids as JSON, batched at) per rejected record;
    ``text`` fits the record and the reason to the warehouse's column (no NUL characters)."""
    ids = json.dumps(work.batch_ids)
    return [
        (
            work.table_source,
            text(r.record.decode("utf-8", "replace").replace("\x00", "")),
            text(r.reason),
            ids,
            batched_at,
        )
        for r in rejected
    ]


def load_rows(work: LeaseLoad, batched_at: Any) -> list[tuple[Any, ...]]:
    """(batch id, table source, lease token, record count, batched at) per batch of the load."""
    counts = work.batch_records or [0] * len(work.batch_ids)
    return [
        (batch_id, work.table_source, work.lease_token, count, batched_at)
        for batch_id, count in zip(work.batch_ids, counts, strict=True)
    ]
