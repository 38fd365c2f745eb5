"""The extractor's side of integrations: what a run needs, and the ledger of runs
(``integration_runs``, migration 0004).

A run's life: ``due`` lists what to run; with the integration's lock held (``locks.py``)
``load`` reads it as a :class:`RunSpec`, ``start_run`` records it (clearing the run request),
``save_state`` keeps each acknowledged STATE, and ``finish_run`` closes it and schedules the
next. A ``running`` row whose lock is free died with its extractor: ``close_dead_runs`` closes
it as failed and ``record_dead_runs`` counts the failure. The scheduler's other reads live here
too (``stop_requested``, ``with_running_rows``), and ``health``, the ledger's summary per
integration that the metrics collector reads at scrape time.

``load`` and ``RunSpec`` live here, not with the operators' rows in ``integrations.py``, because
they are the run's read, taken under its lock: the due check of ``due`` again (one file holds
that rule, so the two cannot drift apart), the sealed config and token decrypted (the only place
they are), and the saved state without the bookmarks a pending reset cleared.

Invariants:

- Closing a run (``finish_run``, ``close_dead_runs``) emits its ``extraction.succeeded`` /
  ``extraction.failed`` event in the closing transaction: an event exists if and only if the
  close committed.
- A failed run counts towards the retry back-off unless it was stopped on request; a dead run
  always counts.
- A reset is done only when a run started after it was requested succeeds.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from common import control, crypto, events
from common.control import Connection
from services.extractor import integrations


@dataclass(frozen=True)
class RunSpec:
    """Everything one run needs, secrets decrypted."""

    integration_id: int
    client_id: int
    name: str
    tap_package: str
    tap_version: str
    tap_executable: str
    config: dict[str, Any]
    secret_keys: list[str]
    token: str
    catalog: dict[str, Any]
    state: Any
    schedule: str
    consecutive_failures: int
    manual: bool
    # A reset waiting for a successful run: the streams re-extracted from scratch (None: all),
    # and the table version their records carry (activated at the run's successful end).
    reset_streams: tuple[str, ...] | None = None
    reset_version: int | None = None


def due(conn: Connection, limit: int) -> list[int]:
    """Integrations to run now: due on schedule or retry, or asked for; oldest due first."""
    with conn, conn.cursor() as cur:
        cur.execute(
            "SELECT integration_id FROM integrations WHERE NOT paused"
            " AND (next_run_at <= now() OR run_requested_at IS NOT NULL)"
            " ORDER BY run_requested_at NULLS LAST, next_run_at LIMIT %s",
            (limit,),
        )
        return [r[0] for r in cur.fetchall()]


def load(conn: Connection, secret_key: str, integration_id: int) -> RunSpec | None:
    """The integration as a run needs it, or None if it is no longer due: removed, paused, or
    run by another extractor between the look for due integrations and taking its lock."""
    with conn, conn.cursor() as cur:
        cur.execute(
            "SELECT client_id, name, tap_package, tap_version, tap_executable, sealed,"
            " secret_keys, catalog, state, schedule, consecutive_failures,"
            " run_requested_at IS NOT NULL, paused,"
            " next_run_at <= now() OR run_requested_at IS NOT NULL,"
            " reset_requested_at IS NOT NULL, reset_streams,"
            " (extract(epoch FROM clock_timestamp()) * 1000)::bigint"
            " FROM integrations WHERE integration_id = %s",
            (integration_id,),
        )
        row = cur.fetchone()
    if row is None or row[12] or not row[13]:
        return None
    sealed = orjson.loads(
        crypto.decrypt(secret_key, bytes(row[5]), purpose="integration", client_id=row[0])
    )
    return RunSpec(
        integration_id=integration_id,
        client_id=row[0],
        name=row[1],
        tap_package=row[2],
        tap_version=row[3],
        tap_executable=row[4],
        config=sealed["config"],
        secret_keys=list(row[6]),
        token=sealed["token"],
        catalog=row[7],
        state=integrations.without_bookmarks(row[8], row[15]) if row[14] else row[8],
        schedule=row[9],
        consecutive_failures=row[10],
        manual=row[11],
        reset_streams=None if not row[14] or row[15] is None else tuple(row[15]),
        reset_version=row[16] if row[14] else None,
    )


def stop_requested(conn: Connection) -> set[int]:
    """Integrations whose running run should stop."""
    with conn, conn.cursor() as cur:
        cur.execute("SELECT integration_id FROM integrations WHERE stop_requested_at IS NOT NULL")
        return {int(r[0]) for r in cur.fetchall()}


def with_running_rows(conn: Connection) -> list[int]:
    """Integrations that have a run marked running (alive elsewhere, or died)."""
    with conn, conn.cursor() as cur:
        cur.execute("SELECT DISTINCT integration_id FROM integration_runs WHERE status = 'running'")
        return [r[0] for r in cur.fetchall()]


def start_run(conn: Connection, integration_id: int, trigger: str, owner: str) -> int:
    """Record a run as started and clear a pending run (or stale stop) request."""
    with conn, conn.cursor() as cur:
        cur.execute(
            "UPDATE integrations SET run_requested_at = NULL, stop_requested_at = NULL"
            " WHERE integration_id = %s",
            (integration_id,),
        )
        cur.execute(
            "INSERT INTO integration_runs (integration_id, trigger, owner) VALUES (%s, %s, %s)"
            " RETURNING run_id",
            (integration_id, trigger, owner),
        )
        row = cur.fetchone()
    assert row is not None
    return int(row[0])


def save_state(
    conn: Connection, integration_id: int, run_id: int, state: Any, records: dict[str, int]
) -> None:
    """Keep a STATE the gate acknowledged every record before, with the run's counts so far."""
    with conn, conn.cursor() as cur:
        cur.execute(
            "UPDATE integrations SET state = %s::jsonb, state_saved_at = now()"
            " WHERE integration_id = %s",
            (orjson.dumps(state).decode(), integration_id),
        )
        cur.execute(
            "UPDATE integration_runs SET records = %s::jsonb, states_saved = states_saved + 1"
            " WHERE run_id = %s",
            (orjson.dumps(records).decode(), run_id),
        )


def finish_run(
    conn: Connection,
    run_id: int,
    *,
    succeeded: bool,
    records: dict[str, int],
    error: str | None,
    stderr: str,
    next_run_at: datetime,
    counts_as_failure: bool = True,
) -> None:
    """Close the run and set when the integration runs next (and its failure count: a run
    stopped on request is failed but no failure to back off from)."""
    with conn, conn.cursor() as cur:
        cur.execute(
            "UPDATE integration_runs r SET status = %s, ended_at = now(), records = %s::jsonb,"
            " error = %s, stderr = %s FROM integrations i"
            " WHERE i.integration_id = r.integration_id AND r.run_id = %s"
            " RETURNING r.integration_id, r.run_id, i.client_id, i.name, r.trigger,"
            " r.started_at, r.ended_at, r.records, r.error",
            (
                "succeeded" if succeeded else "failed",
                orjson.dumps(records).decode(),
                error,
                stderr,
                run_id,
            ),
        )
        row = cur.fetchone()
        if row is None:
            return
        _run_event(cur, row[1:], succeeded=succeeded)
        if succeeded:
            # A reset requested before this run began is done: its end activated the version.
            cur.execute(
                "UPDATE integrations SET consecutive_failures = 0, last_success_at = now(),"
                " next_run_at = %s, stop_requested_at = NULL, updated_at = now(),"
                " reset_requested_at = CASE WHEN reset_requested_at <= %s THEN NULL"
                "   ELSE reset_requested_at END,"
                " reset_streams = CASE WHEN reset_requested_at <= %s THEN NULL"
                "   ELSE reset_streams END"
                " WHERE integration_id = %s",
                (next_run_at, row[5], row[5], row[0]),
            )
        else:
            cur.execute(
                "UPDATE integrations SET consecutive_failures = consecutive_failures + %s,"
                " next_run_at = %s, stop_requested_at = NULL, updated_at = now()"
                " WHERE integration_id = %s",
                (int(counts_as_failure), next_run_at, row[0]),
            )


def close_dead_runs(conn: Connection, integration_id: int) -> int:
    """With the lock held: runs still marked running died with their extractor. Close them as
    failed; return how many (each counts as a failure for the retry back-off)."""
    with conn, conn.cursor() as cur:
        cur.execute(
            "UPDATE integration_runs r SET status = 'failed', ended_at = now(),"
            " error = 'the extractor running it stopped (killed or crashed) before it ended;"
            " the next run resumes from the last saved state'"
            " FROM integrations i WHERE i.integration_id = r.integration_id"
            " AND r.integration_id = %s AND r.status = 'running'"
            " RETURNING r.run_id, i.client_id, i.name, r.trigger, r.started_at, r.ended_at,"
            " r.records, r.error",
            (integration_id,),
        )
        closed = cur.fetchall()
        for row in closed:
            _run_event(cur, row, succeeded=False)
        return len(closed)


def record_dead_runs(conn: Connection, integration_id: int, next_run_at: datetime) -> None:
    """After :func:`close_dead_runs` found some: count the failure and schedule the retry."""
    with conn, conn.cursor() as cur:
        cur.execute(
            "UPDATE integrations SET consecutive_failures = consecutive_failures + 1,"
            " next_run_at = least(next_run_at, %s), updated_at = now()"
            " WHERE integration_id = %s",
            (next_run_at, integration_id),
        )


def _run_event(cur: Any, row: tuple[Any, ...], *, succeeded: bool) -> None:
    """``extraction.succeeded`` / ``extraction.failed`` for the run just closed, in the closing
    transaction: (run_id, client_id, name, trigger, started_at, ended_at, records, error)."""
    run_id, client_id, name, trigger, started_at, ended_at, records, error = row
    events.emit(
        cur,
        client_id,
        "extraction.succeeded" if succeeded else "extraction.failed",
        {
            "client_id": client_id,
            "integration_name": name,
            "run_id": run_id,
            "trigger": trigger,
            "status": "succeeded" if succeeded else "failed",
            "started_at": control.iso(started_at),
            "ended_at": control.iso(ended_at),
            "records": records or {},
            "error": (error or "")[:2000] or None,
        },
    )


def failure_count(conn: Connection, integration_id: int) -> tuple[str, int] | None:
    with conn, conn.cursor() as cur:
        cur.execute(
            "SELECT schedule, consecutive_failures FROM integrations WHERE integration_id = %s",
            (integration_id,),
        )
        row = cur.fetchone()
    return None if row is None else (row[0], int(row[1]))


def list_runs(
    conn: Connection, name: str, limit: int = 20, with_stderr: bool = False
) -> list[dict[str, Any]]:
    """The latest runs first: start, end, status, records per stream, error."""
    found = integrations.require(conn, name)
    with conn, conn.cursor() as cur:
        cur.execute(
            "SELECT run_id, trigger, status, owner, started_at, ended_at, records, states_saved,"
            " error, length(stderr), CASE WHEN %s THEN stderr END FROM integration_runs"
            " WHERE integration_id = %s ORDER BY run_id DESC LIMIT %s",
            (with_stderr, found["integration_id"], limit),
        )
        rows = cur.fetchall()
    out = []
    for r in rows:
        run: dict[str, Any] = {
            "run_id": r[0],
            "trigger": r[1],
            "status": r[2],
            "owner": r[3],
            "started_at": control.iso(r[4]),
            "ended_at": control.iso(r[5]),
            "duration_s": None if r[5] is None else round((r[5] - r[4]).total_seconds(), 3),
            "records": r[6],
            "states_saved": r[7],
            "error": r[8],
            "stderr_chars": r[9] or 0,
        }
        if with_stderr:
            run["stderr"] = r[10]
        out.append(run)
    return out


def health(conn: Connection) -> list[tuple[int, str, datetime | None, int, bool]]:
    """(client_id, name, last_success_at, consecutive_failures, paused) of every integration."""
    with conn, conn.cursor() as cur:
        cur.execute(
            "SELECT client_id, name, last_success_at, consecutive_failures, paused"
            " FROM integrations ORDER BY integration_id"
        )
        return [(r[0], r[1], r[2], int(r[3]), bool(r[4])) for r in cur.fetchall()]
