"""``skein status``: per client and table, the last load, freshness, and the batches waiting or
dead, read from the control database (works while the spool or a warehouse is down).

The query is I/O; ``assess`` (is a table healthy?) is a pure function of its row.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

from common.control import Connection

# A client's accepted records should be in its warehouse within this many seconds: the same
# objective as the SkeinFreshnessOverObjective alert (deploy/prometheus/rules/skein.yml).
FRESHNESS_OBJECTIVE_S = 60.0


@dataclass(frozen=True)
class TableStatus:
    client_id: int
    table_name: str
    destination_type: str | None
    last_loaded_at: str | None
    # loaded at - oldest received at, of the last batch loaded
    last_load_freshness_s: float | None
    # now - received at of the oldest record registered but not loaded (None: nothing waits)
    oldest_unloaded_age_s: float | None
    pending: int  # pending, leased or waiting for a retry
    dead: int
    last_error: str | None
    problems: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        # by hand: dataclasses.asdict deep-copies every field, which dominated a status of
        # thousands of tables
        out = {f: getattr(self, f) for f in _FIELDS}
        out["problems"] = list(self.problems)
        out["healthy"] = not self.problems
        return out


def assess(table: TableStatus, objective_s: float) -> TableStatus:
    """The table with its problems named: dead batches (loads stopped behind them) and records
    waiting longer than the freshness objective."""
    problems = []
    if table.dead:
        problems.append(f"{table.dead} dead batch(es): later batches wait behind them")
    age = table.oldest_unloaded_age_s
    if age is not None and age > objective_s:
        problems.append(
            f"stale: oldest unloaded record is {age:.0f}s old (objective {objective_s:g}s)"
        )
    return replace(table, problems=tuple(problems))


_FIELDS = tuple(f.name for f in fields(TableStatus) if f.name != "problems")


def tables(
    conn: Connection,
    client_id: int | None = None,
    *,
    after: tuple[int, str] | None = None,
    limit: int | None = None,
) -> list[TableStatus]:
    """Every (client, table) the spool has seen, with its load state; or a page of them: those
    past ``after`` (client id, table name), at most ``limit``."""
    with conn, conn.cursor() as cur:
        cur.execute(
            """SELECT t.client_id, t.table_name, coalesce(w.destination_type, l.destination_type),
                      l.loaded_at, extract(epoch FROM l.loaded_at - l.oldest_received_at),
                      extract(epoch FROM now() - w.oldest), coalesce(w.pending, 0),
                      coalesce(w.dead, 0), w.last_error
               FROM table_leases t
               LEFT JOIN LATERAL (
                   SELECT max(b.destination_type) AS destination_type,
                          min(b.oldest_received_at) AS oldest,
                          count(*) FILTER (WHERE b.state <> 'dead') AS pending,
                          count(*) FILTER (WHERE b.state = 'dead') AS dead,
                          (array_agg(b.last_error ORDER BY b.updated_at DESC)
                              FILTER (WHERE b.last_error IS NOT NULL))[1] AS last_error
                   FROM batches b
                   WHERE b.client_id = t.client_id AND b.table_name = t.table_name
                     AND b.state IN ('pending', 'leased', 'retry_wait', 'dead')
               ) w ON true
               LEFT JOIN LATERAL (
                   SELECT b.loaded_at, b.oldest_received_at, b.destination_type
                   FROM batches b
                   WHERE b.client_id = t.client_id AND b.table_name = t.table_name
                     AND b.state = 'loaded'
                   ORDER BY b.partition DESC, b.first_offset DESC
                   LIMIT 1
               ) l ON true
               WHERE (%(client)s::bigint IS NULL OR t.client_id = %(client)s::bigint)
                 AND (%(after_client)s::bigint IS NULL
                      OR (t.client_id, t.table_name) > (%(after_client)s, %(after_table)s))
               ORDER BY t.client_id, t.table_name
               LIMIT %(limit)s""",
            {
                "client": client_id,
                "after_client": after[0] if after else None,
                "after_table": after[1] if after else "",
                "limit": limit,
            },
        )
        rows = cur.fetchall()
    return [
        TableStatus(
            client_id=int(c),
            table_name=name,
            destination_type=dest,
            last_loaded_at=loaded.isoformat() if loaded is not None else None,
            last_load_freshness_s=_seconds(fresh),
            oldest_unloaded_age_s=_seconds(age),
            pending=int(pending),
            dead=int(dead),
            last_error=error,
        )
        for c, name, dest, loaded, fresh, age, pending, dead, error in rows
    ]


def _seconds(value: Any) -> float | None:
    return None if value is None else round(float(value), 3)


def report(found: list[TableStatus], objective_s: float) -> dict[str, Any]:
    """What ``skein status`` and the control API's ``/v1/status`` answer: every table assessed
    against the freshness objective, and the unhealthy ones with their problems."""
    assessed = [assess(t, objective_s) for t in found]
    unhealthy = [t for t in assessed if t.problems]
    return {
        "healthy": not unhealthy,
        "objective_s": objective_s,
        "tables": [t.as_dict() for t in assessed],
        "unhealthy": [
            {"client_id": t.client_id, "table_name": t.table_name, "problems": t.problems}
            for t in unhealthy
        ],
    }


def client_health(conn: Connection, client_ids: list[int]) -> dict[int, dict[str, Any]]:
    """Per client of ``client_ids`` (a page of them): its tables, batches waiting and dead, the
    age of its oldest unloaded record, and its last load (for the console's client list)."""
    with conn, conn.cursor() as cur:
        cur.execute(
            """SELECT c.client_id,
                      (SELECT count(*) FROM table_leases t WHERE t.client_id = c.client_id),
                      coalesce(w.pending, 0), coalesce(w.dead, 0),
                      extract(epoch FROM now() - w.oldest),
                      (SELECT max(b.loaded_at) FROM batches b
                       WHERE b.client_id = c.client_id AND b.state = 'loaded')
               FROM unnest(%s::bigint[]) AS c (client_id)
               LEFT JOIN LATERAL (
                   SELECT count(*) FILTER (WHERE b.state <> 'dead') AS pending,
                          count(*) FILTER (WHERE b.state = 'dead') AS dead,
                          min(b.oldest_received_at) AS oldest
                   FROM batches b
                   WHERE b.client_id = c.client_id
                     AND b.state IN ('pending', 'leased', 'retry_wait', 'dead')
               ) w ON true""",
            (client_ids,),
        )
        rows = cur.fetchall()
    return {
        int(client_id): {
            "tables": int(tables),
            "pending": int(pending),
            "dead": int(dead),
            "oldest_unloaded_age_s": _seconds(age),
            "last_loaded_at": loaded.isoformat() if loaded is not None else None,
        }
        for client_id, tables, pending, dead, age, loaded in rows
    }


def table_activity(
    conn: Connection, client_id: int, window_s: float = 3600.0
) -> dict[str, dict[str, Any]]:
    """Per table of the client: rows loaded in all (batches still on record) and, per minute of
    the last ``window_s``, rows loaded and the worst freshness at load (loaded at - oldest
    received at); for the console's per-table charts."""
    with conn, conn.cursor() as cur:
        cur.execute(
            """SELECT table_name, sum(record_count) FROM batches
               WHERE client_id = %s AND state = 'loaded' AND replay_of IS NULL
               GROUP BY table_name""",
            (client_id,),
        )
        totals = {name: int(rows) for name, rows in cur.fetchall()}
        cur.execute(
            """SELECT table_name, extract(epoch FROM date_trunc('minute', loaded_at)),
                      sum(record_count), max(extract(epoch FROM loaded_at - oldest_received_at))
               FROM batches
               WHERE client_id = %s AND state = 'loaded'
                 AND loaded_at > now() - make_interval(secs => %s)
               GROUP BY 1, 2 ORDER BY 1, 2""",
            (client_id, window_s),
        )
        minutes = cur.fetchall()
    found: dict[str, dict[str, Any]] = {
        name: {"rows_loaded": rows, "rows_per_min": [], "freshness_s": []}
        for name, rows in totals.items()
    }
    for name, minute, rows, fresh in minutes:
        table = found.setdefault(name, {"rows_loaded": 0, "rows_per_min": [], "freshness_s": []})
        table["rows_per_min"].append((float(minute), float(rows)))
        table["freshness_s"].append((float(minute), float(fresh)))
    return found
