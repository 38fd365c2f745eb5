"""Integrations and their runs in the control database (migration 0004).

Plain functions over a psycopg2 connection the caller owns, one transaction each, shared by the
``skein integrations`` CLI and the extractor. The tap's config and the client's API token are
stored only encrypted (``common.crypto``, ``SKEIN_SECRET_KEY``).

One run at a time per integration: whoever runs it holds a session-level advisory lock keyed by
the integration id on its own connection for the whole run. A crashed extractor's connection
closes, which releases the lock; a ``running`` row whose lock is free is therefore a run that
died, and is closed as failed by the next extractor that takes the lock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
import psycopg2
import psycopg2.extensions

from common import audit, control, crypto, events

Connection = psycopg2.extensions.connection
_LOCK_BASE = 0x5EE1 << 48  # advisory lock ids of integrations: this + integration_id

_PUBLIC = (
    "i.integration_id, i.client_id, i.name, i.tap_package, i.tap_version, i.tap_executable,"
    " i.config_keys, i.secret_keys, i.schedule, i.paused, i.state, i.state_saved_at,"
    " i.next_run_at, i.run_requested_at, i.consecutive_failures, i.last_success_at,"
    " i.created_at, i.catalog, r.run_id, r.status, r.started_at, r.ended_at, r.error,"
    " i.reset_requested_at, i.reset_streams"
)
# Each integration's latest run, for listings.
_LAST_RUN = (
    " LEFT JOIN LATERAL (SELECT run_id, status, started_at, ended_at, error"
    " FROM integration_runs WHERE integration_id = i.integration_id"
    " ORDER BY run_id DESC LIMIT 1) r ON true"
)


class IntegrationError(control.ControlError):
    """A request about integrations that cannot be carried out."""


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


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _public(row: tuple[Any, ...]) -> dict[str, Any]:
    from services.extractor.catalog import selected_streams

    return {
        "integration_id": row[0],
        "client_id": row[1],
        "name": row[2],
        "tap": f"{row[3]}=={row[4]}",
        "tap_executable": row[5],
        "config_keys": list(row[6]),
        "secret_keys": list(row[7]),
        "schedule": row[8],
        "paused": row[9],
        "state": row[10],
        "state_saved_at": _iso(row[11]),
        "next_run_at": _iso(row[12]),
        "run_requested_at": _iso(row[13]),
        "consecutive_failures": row[14],
        "last_success_at": _iso(row[15]),
        "created_at": _iso(row[16]),
        "streams": selected_streams(row[17]),
        "last_run": None
        if row[18] is None
        else {
            "run_id": row[18],
            "status": row[19],
            "started_at": _iso(row[20]),
            "ended_at": _iso(row[21]),
            "error": row[22],
        },
        # A reset waiting for its successful run (streams None: every one).
        "reset_requested_at": _iso(row[23]),
        "reset_streams": row[24],
    }


def lock_id(integration_id: int) -> int:
    return _LOCK_BASE + integration_id


# --- operators (CLI) -------------------------------------------------------------------------


def create(
    conn: Connection,
    secret_key: str,
    *,
    client_id: int,
    name: str,
    tap_package: str,
    tap_version: str,
    tap_executable: str,
    config: dict[str, Any],
    secret_keys: list[str],
    catalog: dict[str, Any],
    schedule: str,
    next_run_at: datetime,
) -> dict[str, Any]:
    """Add an integration with a new API token of its client (kept encrypted, never shown)."""
    if get(conn, name) is not None:
        raise IntegrationError(f"an integration named {name!r} already exists")
    token = control.create_api_token(conn, client_id)
    sealed = crypto.encrypt(
        secret_key,
        orjson.dumps({"config": config, "token": token["token"]}),
        purpose="integration",
        client_id=client_id,
    )
    try:
        _insert(
            conn,
            client_id,
            name,
            tap_package,
            tap_version,
            tap_executable,
            sealed,
            config,
            secret_keys,
            token["token_id"],
            catalog,
            schedule,
            next_run_at,
        )
    except psycopg2.Error:
        control.revoke_api_token(conn, token["token_id"])  # not left behind, usable
        raise
    found = get(conn, name)
    assert found is not None
    return found


def _insert(
    conn: Connection,
    client_id: int,
    name: str,
    tap_package: str,
    tap_version: str,
    tap_executable: str,
    sealed: bytes,
    config: dict[str, Any],
    secret_keys: list[str],
    token_id: int,
    catalog: dict[str, Any],
    schedule: str,
    next_run_at: datetime,
) -> None:
    with conn, conn.cursor() as cur:
        cur.execute(
            "INSERT INTO integrations (client_id, name, tap_package, tap_version, tap_executable,"
            " sealed, config_keys, secret_keys, token_id, catalog, schedule, next_run_at)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s::jsonb, %s, %s)",
            (
                client_id,
                name,
                tap_package,
                tap_version,
                tap_executable,
                psycopg2.Binary(sealed),
                sorted(config),
                secret_keys,
                token_id,
                orjson.dumps(catalog).decode(),
                schedule,
                next_run_at,
            ),
        )
        audit.record(
            cur,
            "integration.add",
            client_id=client_id,
            subject=name,
            # The config's key names only: its values may be credentials.
            details={
                "tap": f"{tap_package}=={tap_version}",
                "schedule": schedule,
                "config_keys": sorted(config),
            },
        )


def get(conn: Connection, name: str) -> dict[str, Any] | None:
    """An integration by name (never its config values or token), or None."""
    with conn, conn.cursor() as cur:
        cur.execute(f"SELECT {_PUBLIC} FROM integrations i{_LAST_RUN} WHERE i.name = %s", (name,))  # noqa: S608
        row = cur.fetchone()
    return None if row is None else _public(row)


def require(conn: Connection, name: str) -> dict[str, Any]:
    found = get(conn, name)
    if found is None:
        raise IntegrationError(f"no integration named {name!r}")
    return found


def list_for_client(conn: Connection, client_id: int) -> list[dict[str, Any]]:
    with conn, conn.cursor() as cur:
        cur.execute(
            f"SELECT {_PUBLIC} FROM integrations i{_LAST_RUN} WHERE i.client_id = %s"  # noqa: S608
            " ORDER BY i.name",
            (client_id,),
        )
        rows = cur.fetchall()
    return [_public(r) for r in rows]


def request_run(conn: Connection, name: str) -> dict[str, Any]:
    """Ask the extractor to run it now (a paused integration is refused)."""
    found = require(conn, name)
    if found["paused"]:
        raise IntegrationError(f"integration {name!r} is paused; resume it first")
    with conn, conn.cursor() as cur:
        cur.execute(
            "UPDATE integrations SET run_requested_at = coalesce(run_requested_at, now()),"
            " updated_at = now() WHERE name = %s",
            (name,),
        )
    return require(conn, name)


def request_stop(conn: Connection, name: str) -> int | None:
    """Ask the extractor running it to stop its run; the run's id, or None when none runs."""
    found = require(conn, name)
    with conn, conn.cursor() as cur:
        cur.execute(
            "SELECT run_id FROM integration_runs WHERE integration_id = %s AND status = 'running'"
            " ORDER BY run_id DESC LIMIT 1",
            (found["integration_id"],),
        )
        row = cur.fetchone()
        if row is None:
            return None
        cur.execute(
            "UPDATE integrations SET stop_requested_at = now() WHERE integration_id = %s",
            (found["integration_id"],),
        )
        audit.record(
            cur, "integration.stop", client_id=found["client_id"], subject=name,
            details={"run_id": row[0]},
        )  # fmt: skip
    return int(row[0])


def stop_requested(conn: Connection) -> set[int]:
    """Integrations whose running run should stop."""
    with conn, conn.cursor() as cur:
        cur.execute("SELECT integration_id FROM integrations WHERE stop_requested_at IS NOT NULL")
        return {int(r[0]) for r in cur.fetchall()}


def set_paused(conn: Connection, name: str, paused: bool, next_run_at: datetime | None) -> None:
    require(conn, name)
    with conn, conn.cursor() as cur:
        cur.execute(
            "UPDATE integrations SET paused = %s, run_requested_at = NULL,"
            " next_run_at = coalesce(%s, next_run_at), updated_at = now() WHERE name = %s"
            " RETURNING client_id",
            (paused, next_run_at, name),
        )
        row = cur.fetchone()
        audit.record(
            cur,
            "integration.pause" if paused else "integration.resume",
            client_id=row[0] if row else None,
            subject=name,
        )


def remove(conn: Connection, name: str) -> dict[str, Any]:
    """Delete it with its run history and revoke its API token."""
    found = require(conn, name)
    with conn, conn.cursor() as cur:
        cur.execute(
            "DELETE FROM integrations WHERE name = %s RETURNING token_id, client_id", (name,)
        )
        row = cur.fetchone()
        if row is not None:
            audit.record(cur, "integration.remove", client_id=row[1], subject=name)
        if row is not None and row[0] is not None:
            cur.execute(
                "UPDATE api_tokens SET revoked_at = now() WHERE token_id = %s"
                " AND revoked_at IS NULL",
                (row[0],),
            )
    return found


def list_runs(
    conn: Connection, name: str, limit: int = 20, with_stderr: bool = False
) -> list[dict[str, Any]]:
    """The latest runs first: start, end, status, records per stream, error."""
    found = require(conn, name)
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
            "started_at": _iso(r[4]),
            "ended_at": _iso(r[5]),
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


# --- the extractor ---------------------------------------------------------------------------


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


def with_running_rows(conn: Connection) -> list[int]:
    """Integrations that have a run marked running (alive elsewhere, or died)."""
    with conn, conn.cursor() as cur:
        cur.execute("SELECT DISTINCT integration_id FROM integration_runs WHERE status = 'running'")
        return [r[0] for r in cur.fetchall()]


def try_lock(conn: Connection, integration_id: int) -> bool:
    """Take the integration's run lock on ``conn`` (session level) if nobody holds it."""
    with conn, conn.cursor() as cur:
        cur.execute("SELECT pg_try_advisory_lock(%s)", (lock_id(integration_id),))
        row = cur.fetchone()
    return bool(row and row[0])


def unlock(conn: Connection, integration_id: int) -> None:
    with conn, conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_unlock(%s)", (lock_id(integration_id),))


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
            "started_at": _iso(started_at),
            "ended_at": _iso(ended_at),
            "records": records or {},
            "error": (error or "")[:2000] or None,
        },
    )


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
        state=without_bookmarks(row[8], row[15]) if row[14] else row[8],
        schedule=row[9],
        consecutive_failures=row[10],
        manual=row[11],
        reset_streams=None if not row[14] or row[15] is None else tuple(row[15]),
        reset_version=row[16] if row[14] else None,
    )


def without_bookmarks(state: Any, streams: list[str] | None) -> Any:
    """A Singer state with the bookmarks of ``streams`` (None: all of them) removed."""
    if streams is None or not isinstance(state, dict):
        return None
    bookmarks = state.get("bookmarks")
    if not isinstance(bookmarks, dict):
        return state
    kept = {k: v for k, v in bookmarks.items() if k not in streams}
    out = {k: v for k, v in state.items() if k != "currently_syncing"}
    out["bookmarks"] = kept
    return out


def _json_or_null(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def reset(conn: Connection, name: str, stream: str | None = None) -> dict[str, Any]:
    """Clear the saved bookmark of ``stream`` (or of every stream): the next runs re-extract it
    under a new table version until one succeeds, whose end swaps the table in whole (rows the
    source no longer has are gone); a failed run changes nothing in the warehouse's old rows."""
    with conn, conn.cursor() as cur:
        cur.execute(
            "SELECT integration_id, client_id, catalog, state, reset_requested_at IS NOT NULL,"
            " reset_streams FROM integrations WHERE name = %s FOR UPDATE",
            (name,),
        )
        row = cur.fetchone()
        if row is None:
            raise IntegrationError(f"no integration named {name!r}")
        integration_id, client_id, catalog, state, pending, pending_streams = row
        streams = [s.get("tap_stream_id") for s in (catalog or {}).get("streams", [])]
        if stream is not None and stream not in streams:
            raise IntegrationError(
                f"integration {name!r} has no stream {stream!r}; its streams: {', '.join(streams)}"
            )
        if stream is None or (pending and pending_streams is None):
            wanted: list[str] | None = None
        else:
            wanted = sorted({*(pending_streams or []), stream})
        cur.execute(
            "UPDATE integrations SET state = %s::jsonb, reset_requested_at = now(),"
            " reset_streams = %s, updated_at = now() WHERE integration_id = %s",
            (_json_or_null(without_bookmarks(state, wanted)), wanted, integration_id),
        )
        audit.record(
            cur,
            "integration.reset",
            client_id=client_id,
            subject=name,
            details={"streams": wanted if wanted is not None else "all"},
        )
    return {"name": name, "reset_streams": wanted if wanted is not None else "all"}


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


def record_dead_runs(conn: Connection, integration_id: int, next_run_at: datetime) -> None:
    """After :func:`close_dead_runs` found some: count the failure and schedule the retry."""
    with conn, conn.cursor() as cur:
        cur.execute(
            "UPDATE integrations SET consecutive_failures = consecutive_failures + 1,"
            " next_run_at = least(next_run_at, %s), updated_at = now()"
            " WHERE integration_id = %s",
            (next_run_at, integration_id),
        )


def failure_count(conn: Connection, integration_id: int) -> tuple[str, int] | None:
    with conn, conn.cursor() as cur:
        cur.execute(
            "SELECT schedule, consecutive_failures FROM integrations WHERE integration_id = %s",
            (integration_id,),
        )
        row = cur.fetchone()
    return None if row is None else (row[0], int(row[1]))


def health(conn: Connection) -> list[tuple[int, str, datetime | None, int, bool]]:
    """(client_id, name, last_success_at, consecutive_failures, paused) of every integration."""
    with conn, conn.cursor() as cur:
        cur.execute(
            "SELECT client_id, name, last_success_at, consecutive_failures, paused"
            " FROM integrations ORDER BY integration_id"
        )
        return [(r[0], r[1], r[2], int(r[3]), bool(r[4])) for r in cur.fetchall()]
