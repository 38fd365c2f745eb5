"""Replay: a client's loaded batches enqueued again from their retained objects.

A table dropped by mistake, a destination changed, a warehouse restored from an old backup:
the batch objects stay in S3 for the retention (7 days by default), so their records can be
loaded again. :func:`replay` inserts, for each original batch that was loaded in the window,
a new batch row naming the same object and the original (``replay_of``), in the originals'
order, for the client's current destination type. They load like any batch (leases, order,
exactly once by their own ids) and converge to the same rows: keyed tables keep the greatest
sequence (a replayed row never overwrites a newer one), append-only tables skip rows whose
deterministic ``__sdc_primary_key`` is there already, and an ``activate_version`` only removes
rows of older versions than its own.

Only original batches are replayed (a replay of a replay would load the same object twice
over); a batch whose object was purged is reported in ``gone`` and the rest is loaded.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from common import audit, control
from common.control import Connection

MAX_BATCHES = 10_000  # one replay call; a wider window is refused (narrow it, or call again)


def replay(
    conn: Connection,
    client_id: int,
    *,
    since: datetime,
    until: datetime | None = None,
    table: str | None = None,
    dry_run: bool = False,
) -> dict[str, Any]:
    """Enqueue again the client's loaded batches whose records arrived in [since, until)
    (of ``table``, when given). Returns what was (or, with ``dry_run``, would be) enqueued, by
    table, and the ranges whose objects are gone."""
    if until is not None and until <= since:
        raise control.ControlError("--until must be after --since")
    with conn, conn.cursor() as cur:
        cur.execute("SELECT type FROM destinations WHERE client_id = %s", (client_id,))
        found = cur.fetchone()
        if found is None:
            cur.execute("SELECT 1 FROM clients WHERE client_id = %s", (client_id,))
            if cur.fetchone() is None:
                raise control.NotFound(f"no client {client_id}")
            raise control.ControlError(f"client {client_id} has no destination to replay into")
        destination_type = found[0]
        cur.execute(
            """SELECT batch_id, table_name, record_count, purged_at IS NOT NULL,
                      oldest_received_at, newest_received_at
               FROM batches
               WHERE client_id = %s AND replay_of IS NULL AND state = 'loaded'
                 AND newest_received_at >= %s
                 AND (%s::timestamptz IS NULL OR oldest_received_at < %s)
                 AND (%s::text IS NULL OR table_name = %s)
               ORDER BY table_name, partition, first_offset
               LIMIT %s""",
            (client_id, since, until, until, table, table, MAX_BATCHES + 1),
        )
        rows = cur.fetchall()
        if len(rows) > MAX_BATCHES:
            raise control.ControlError(
                f"more than {MAX_BATCHES:,} batches in the window: narrow it (--until, --table)"
            )
        tables: dict[str, dict[str, Any]] = {}
        gone: dict[str, dict[str, Any]] = {}
        keep: list[int] = []
        for batch_id, name, records, purged, oldest, newest in rows:
            into = gone if purged else tables
            entry = into.setdefault(
                name, {"table_name": name, "batches": 0, "records": 0, "from": oldest, "to": newest}
            )
            entry["batches"] += 1
            entry["records"] += records
            entry["from"], entry["to"] = min(entry["from"], oldest), max(entry["to"], newest)
            if not purged:
                keep.append(batch_id)
        if keep and not dry_run:
            cur.execute(
                """INSERT INTO batches (client_id, destination_type, table_name, object_key,
                       partition, first_offset, last_offset, record_count, bytes,
                       oldest_received_at, newest_received_at, request_ids, replay_of)
                   SELECT client_id, %s, table_name, object_key, partition, first_offset,
                          last_offset, record_count, bytes, oldest_received_at,
                          newest_received_at, request_ids, batch_id
                   FROM batches WHERE batch_id = ANY(%s)
                   ORDER BY table_name, partition, first_offset""",
                (destination_type, keep),
            )
            # A table forgotten as idle has no lease row; the lease needs one.
            cur.execute(
                """INSERT INTO table_leases (client_id, table_name)
                   SELECT DISTINCT %s, unnest(%s::text[]) ON CONFLICT DO NOTHING""",
                (client_id, list(tables)),
            )
            audit.record(
                cur,
                "batches.replay",
                client_id=client_id,
                subject=table or "all tables",
                details={
                    "since": since.isoformat(),
                    "until": until.isoformat() if until else None,
                    "batches": len(keep),
                    "gone": sum(g["batches"] for g in gone.values()),
                },
            )

    def listed(entries: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
        return [
            {**e, "from": control.iso(e["from"]), "to": control.iso(e["to"])}
            for e in entries.values()
        ]

    return {
        "client_id": client_id,
        "destination_type": destination_type,
        "dry_run": dry_run,
        "enqueued" if not dry_run else "would_enqueue": listed(tables),
        "gone": listed(gone),
    }
