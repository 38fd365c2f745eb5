"""The spool's operator tools and retention over the control database (one transaction each).

What ``skein spool``, the control API and the spool's housekeeping thread do to batches outside
the lease protocol (``services.spool.queue``): list and read them, the operator's edges of the
state machine (``retry`` a dead batch, ``skip`` it so its table's later batches load), open
batches counted for metrics and ``stats``, and retention (``purge_loaded`` objects past the
retention, ``prune_rejections``, ``prune_idle_tables``). Plain statements, no SQL functions.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from common.control import Connection, iso
from services.spool.queue import OPEN_STATES, Conflict


class NotFound(Exception):
    """No batch has the id asked for."""


_LIST_COLUMNS = (
    "batch_id, client_id, destination_type, table_name, object_key, partition, first_offset, "
    "last_offset, record_count, bytes, oldest_received_at, newest_received_at, state, attempts, "
    "lease_owner, lease_expires_at, next_attempt_at, last_error, last_error_kind, created_at, "
    "updated_at, loaded_at, purged_at"
)


def _listed(row: tuple[Any, ...]) -> dict[str, Any]:
    keys = [c.strip() for c in _LIST_COLUMNS.split(",")]
    return {k: (iso(v) if isinstance(v, datetime) else v) for k, v in zip(keys, row, strict=True)}


def list_batches(
    conn: Connection,
    *,
    state: str | None = None,
    client_id: int | None = None,
    destination_type: str | None = None,
    limit: int = 1000,
) -> list[dict[str, Any]]:
    with conn, conn.cursor() as cur:
        cur.execute(
            f"""SELECT {_LIST_COLUMNS} FROM batches
                WHERE (%(state)s::text IS NULL OR state = %(state)s)
                  AND (%(client)s::bigint IS NULL OR client_id = %(client)s)
                  AND (%(dest)s::text IS NULL OR destination_type = %(dest)s)
                ORDER BY client_id, table_name, partition, first_offset
                LIMIT %(limit)s""",  # noqa: S608 (constant column list)
            {"state": state, "client": client_id, "dest": destination_type, "limit": limit},
        )
        return [_listed(r) for r in cur.fetchall()]


def page_batches(
    conn: Connection,
    *,
    state: str | None = None,
    client_id: int | None = None,
    after: int = 0,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """Batches by id (a keyset page: ids past ``after``), for the control API."""
    with conn, conn.cursor() as cur:
        cur.execute(
            f"""SELECT {_LIST_COLUMNS} FROM batches
                WHERE batch_id > %(after)s
                  AND (%(state)s::text IS NULL OR state = %(state)s)
                  AND (%(client)s::bigint IS NULL OR client_id = %(client)s)
                ORDER BY batch_id LIMIT %(limit)s""",  # noqa: S608 (constant column list)
            {"state": state, "client": client_id, "after": after, "limit": limit},
        )
        return [_listed(r) for r in cur.fetchall()]


def get_batch(conn: Connection, batch_id: int) -> dict[str, Any]:
    with conn, conn.cursor() as cur:
        cur.execute(
            f"SELECT {_LIST_COLUMNS} FROM batches WHERE batch_id = %s",  # noqa: S608
            (batch_id,),
        )
        row = cur.fetchone()
    if row is None:
        raise NotFound(f"no batch {batch_id}")
    return _listed(row)


def retry(conn: Connection, batch_id: int | None = None) -> int:
    """Put a dead batch (or, with None, every dead batch) back to pending for another go."""
    with conn, conn.cursor() as cur:
        cur.execute(
            """UPDATE batches b SET state = 'pending', attempts = 0, first_failed_at = NULL,
                   next_attempt_at = now(), updated_at = now(),
                   -- to the client's destination as it is now (its type may have changed)
                   destination_type = coalesce(
                       (SELECT d.type FROM destinations d WHERE d.client_id = b.client_id),
                       b.destination_type)
               WHERE state = 'dead' AND (%(id)s::bigint IS NULL OR batch_id = %(id)s)""",
            {"id": batch_id},
        )
        count = int(cur.rowcount)
    if batch_id is not None and count == 0:
        _require_dead(conn, batch_id)
    return count


def skip(conn: Connection, batch_id: int) -> int:
    """Give up on a dead batch so that its table's later batches can load (operator decision)."""
    with conn, conn.cursor() as cur:
        cur.execute(
            """UPDATE batches SET state = 'skipped', updated_at = now()
               WHERE state = 'dead' AND batch_id = %s""",
            (batch_id,),
        )
        count = int(cur.rowcount)
    if count == 0:
        _require_dead(conn, batch_id)
    return count


def purge_loaded(
    conn: Connection,
    older_than_s: float,
    delete: Callable[[list[str]], set[str]],
    limit: int = 1000,
) -> int:
    """Delete the objects of up to ``limit`` batches loaded more than ``older_than_s`` ago and
    mark their rows purged; how many were. ``delete`` removes keys from S3 and returns those it
    removed (a key it could not remove stays unpurged, for the next round). Only loaded
    batches, the oldest first: a dead or skipped batch's object is the only copy of records that
    never reached a warehouse. The rows stay locked (and skipped by a concurrent purge) until
    they are marked."""
    with conn, conn.cursor() as cur:
        cur.execute(
            """SELECT batch_id, object_key FROM batches b
               WHERE state = 'loaded' AND purged_at IS NULL
                 AND updated_at < now() - make_interval(secs => %s)
                 AND NOT EXISTS (  -- a replay of the same object still to load keeps it
                     SELECT 1 FROM batches r WHERE r.object_key = b.object_key
                       AND r.replay_of IS NOT NULL
                       AND r.state IN ('pending', 'leased', 'retry_wait', 'dead'))
               ORDER BY updated_at LIMIT %s
               FOR UPDATE SKIP LOCKED""",
            (older_than_s, limit),
        )
        rows = cur.fetchall()
        if not rows:
            return 0
        removed = delete([key for _, key in rows])
        ids = [batch_id for batch_id, key in rows if key in removed]
        if ids:
            cur.execute("UPDATE batches SET purged_at = now() WHERE batch_id = ANY(%s)", (ids,))
        return len(ids)


def prune_rejections(conn: Connection, older_than_s: float, limit: int = 10_000) -> int:
    """Drop up to ``limit`` kept copies of rejected records older than ``older_than_s`` (the
    batch retention: the objects they came from are gone too); how many were."""
    with conn, conn.cursor() as cur:
        cur.execute(
            """DELETE FROM rejected_records WHERE rejection_id IN (
                   SELECT rejection_id FROM rejected_records
                   WHERE created_at < now() - make_interval(secs => %s) LIMIT %s)""",
            (older_than_s, limit),
        )
        return int(cur.rowcount)


def prune_idle_tables(conn: Connection, older_than_s: float, limit: int = 1000) -> int:
    """Forget up to ``limit`` tables idle longer than ``older_than_s``: their ``table_leases``,
    ``high_water`` and ``client_tables`` rows (batch rows stay, for history and status). A table
    is idle when its newest batch (the last in Kafka order: a table stays in one partition) is
    loaded or skipped, registered that long ago, and nobody holds its lease. The rows of idle
    tables would otherwise grow for ever and count against the client's tables quota; a
    table sent to again is registered anew. (Kafka's retention should not be longer than this,
    or a re-read of offsets that old would find no high-water mark.)"""
    with conn, conn.cursor() as cur:
        cur.execute(
            """WITH idle AS (
                   SELECT l.client_id, l.table_name FROM table_leases l
                   CROSS JOIN LATERAL (
                       SELECT b.state, b.created_at FROM batches b
                       WHERE b.client_id = l.client_id AND b.table_name = l.table_name
                       ORDER BY b.partition DESC, b.first_offset DESC, b.batch_id DESC LIMIT 1
                   ) newest
                   WHERE (l.expires_at IS NULL OR l.expires_at < now())
                     AND newest.state IN ('loaded', 'skipped')
                     AND newest.created_at < now() - make_interval(secs => %s)
                   LIMIT %s
                   FOR UPDATE OF l SKIP LOCKED
               ), gone AS (
                   DELETE FROM table_leases t USING idle i
                   WHERE t.client_id = i.client_id AND t.table_name = i.table_name
                   RETURNING t.client_id, t.table_name
               ), marks AS (
                   DELETE FROM high_water h USING gone g
                   WHERE h.client_id = g.client_id AND h.table_name = g.table_name
               ), quota AS (
                   DELETE FROM client_tables c USING gone g
                   WHERE c.client_id = g.client_id AND c.table_name = g.table_name
               )
               SELECT count(*) FROM gone""",
            (older_than_s, limit),
        )
        return int(cur.fetchone()[0])  # type: ignore[index]


def _require_dead(conn: Connection, batch_id: int) -> None:
    state = get_batch(conn, batch_id)["state"]
    raise Conflict(f"batch {batch_id} is {state}, not dead")


def stats(conn: Connection) -> dict[str, Any]:
    """Open batches by destination type and state, with the oldest waiting record's age."""
    with conn, conn.cursor() as cur:
        cur.execute(
            """SELECT coalesce(destination_type, 'unassigned'), state, count(*), sum(bytes),
                      extract(epoch FROM now() - min(oldest_received_at))
               FROM batches WHERE state IN %s
               GROUP BY 1, 2 ORDER BY 1, 2""",
            (OPEN_STATES,),
        )
        rows = cur.fetchall()
        cur.execute(
            """SELECT client_id, state, count(*),
                      extract(epoch FROM now() - min(oldest_received_at))
               FROM batches WHERE state IN %s
               GROUP BY 1, 2 ORDER BY 1, 2""",
            (OPEN_STATES,),
        )
        by_client = cur.fetchall()
        cur.execute("SELECT count(*) FROM table_leases WHERE expires_at > now()")
        live = cur.fetchone()
    return {
        "clients": [
            {"client_id": int(c), "state": s, "batches": int(n), "oldest_age_s": float(a or 0.0)}
            for c, s, n, a in by_client
        ],
        "open": [
            {
                "destination_type": d,
                "state": s,
                "batches": int(n),
                "bytes": int(b or 0),
                "oldest_age_s": float(a or 0.0),
            }
            for d, s, n, b, a in rows
        ],
        "live_leases": int(live[0]) if live else 0,
    }
