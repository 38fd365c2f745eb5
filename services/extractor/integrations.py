"""Integrations in the control database (migration 0004): the rows operators add, read, pause,
reset and remove.

Plain functions over a psycopg2 connection the caller owns, one transaction each (with its audit
row), called by the control plane's rules (``services/control/integrations.py``, behind ``skein
integrations`` and the HTTP API). The tap's config and the client's API token are stored only
encrypted, as one sealed object (``common.crypto``, ``SKEIN_SECRET_KEY``): nothing here returns
them; only a run opens it (``runs.load``).

Operators ask the extractor for things by stamping the row, never by calling it:
``run_requested_at`` (run now), ``stop_requested_at`` (stop the running run), and
``reset_requested_at``/``reset_streams`` (re-extract until a run succeeds). The extractor reads
and clears them in ``runs.py``; the run lock is ``locks.py``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
import psycopg2

from common import audit, control, crypto, tokens
from common.control import Connection
from services.extractor.catalog import selected_streams

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


def _public(row: tuple[Any, ...]) -> dict[str, Any]:
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
        "state_saved_at": control.iso(row[11]),
        "next_run_at": control.iso(row[12]),
        "run_requested_at": control.iso(row[13]),
        "consecutive_failures": row[14],
        "last_success_at": control.iso(row[15]),
        "created_at": control.iso(row[16]),
        "streams": selected_streams(row[17]),
        "last_run": None
        if row[18] is None
        else {
            "run_id": row[18],
            "status": row[19],
            "started_at": control.iso(row[20]),
            "ended_at": control.iso(row[21]),
            "error": row[22],
        },
        # A reset waiting for its successful run (streams None: every one).
        "reset_requested_at": control.iso(row[23]),
        "reset_streams": row[24],
    }


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
    token = tokens.create_api_token(conn, client_id)
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
        tokens.revoke_api_token(conn, token["token_id"])  # not left behind, usable
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


def stored_catalog(conn: Connection, name: str) -> dict[str, Any]:
    """The catalog the tap discovered when the integration was added, with its selection."""
    with conn, conn.cursor() as cur:
        cur.execute("SELECT catalog FROM integrations WHERE name = %s", (name,))
        row = cur.fetchone()
    if row is None:
        raise IntegrationError(f"no integration named {name!r}")
    found: dict[str, Any] = row[0]
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


def configure(
    conn: Connection,
    name: str,
    *,
    catalog: dict[str, Any] | None,
    schedule: str | None,
    next_run_at: datetime | None,
) -> None:
    """Store a new stream selection (``catalog``) and/or schedule (with its next run); a run
    under way keeps what it started with, the next one uses these."""
    with conn, conn.cursor() as cur:
        cur.execute(
            "UPDATE integrations SET catalog = coalesce(%s::jsonb, catalog),"
            " schedule = coalesce(%s, schedule), next_run_at = coalesce(%s, next_run_at),"
            " updated_at = now() WHERE name = %s RETURNING client_id",
            (
                None if catalog is None else orjson.dumps(catalog).decode(),
                schedule,
                next_run_at,
                name,
            ),
        )
        row = cur.fetchone()
        if row is None:
            raise IntegrationError(f"no integration named {name!r}")
        details: dict[str, Any] = {}
        if schedule is not None:
            details["schedule"] = schedule
        if catalog is not None:
            details["streams"] = [s["stream"] for s in selected_streams(catalog)]
        audit.record(cur, "integration.configure", client_id=row[0], subject=name, details=details)


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
