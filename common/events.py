"""The events a client's notification hooks can hear, and how a fact's transaction records one.

An event is written by the control database's ``hook_emit`` inside the transaction that
records its fact (migration 0018): the spool's ack writes ``load.completed`` and
``records.rejected``, a batch going dead writes ``batch.dead``, the extractor closing a run
writes ``extraction.succeeded`` or ``extraction.failed``. So an event exists if and only if its
fact was committed; the control service's delivery worker sends it (``services/control/
delivery.py``).
"""

from __future__ import annotations

from typing import Any

import orjson

EVENT_TYPES = (
    "load.completed",
    "records.rejected",
    "batch.dead",
    "schema.changed",
    "extraction.succeeded",
    "extraction.failed",
)


def emit(cur: Any, client_id: int, type_: str, payload: dict[str, Any]) -> None:
    """Record ``type_`` for ``client_id``'s hooks that want it, in ``cur``'s transaction."""
    if type_ not in EVENT_TYPES:
        raise ValueError(f"unknown event type {type_!r}")
    cur.execute(
        "SELECT hook_emit(%s, %s, %s::jsonb)",
        (client_id, type_, orjson.dumps(payload, default=str).decode()),
    )
