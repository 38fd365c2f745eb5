"""Integrations (Singer taps the extractor runs): the rules ``skein integrations`` and the HTTP
API share. Names are unique overall; ``owned`` scopes one to a client (another client's
integration is not found)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from common import control
from services.control import accounts
from services.extractor import catalog, integrations, redact, sandbox, schedule, taps
from services.extractor.runs import list_runs
from services.extractor.settings import ExtractorSettings


@contextmanager
def refusals() -> Iterator[None]:
    """The extractor's own refusals (a tap that will not install, a bad cron, ...) as the
    control plane's ``ControlError``."""
    try:
        yield
    except (taps.TapError, catalog.CatalogError, schedule.ScheduleError) as exc:
        raise control.ControlError(str(exc)) from None


def add(
    conn: control.Connection,
    settings: ExtractorSettings,
    *,
    client_id: int,
    name: str,
    tap: str,
    config: Any,
    cron: str = "0 * * * *",
    select: list[str] | None = None,
    replication_keys: dict[str, str] | None = None,
    secret: list[str] | None = None,
) -> dict[str, Any]:
    """Install the tap (its own virtualenv, cached, in the sandbox), discover its streams, select
    them and store the integration with a new API token of the client."""
    with refusals():
        if accounts.get_client(conn, client_id) is None:
            raise control.NotFound(f"no client {client_id}")
        taps.check_name(name)
        if integrations.get(conn, name) is not None:  # names are unique across clients
            raise control.ControlError(f"the integration name {name!r} is taken; choose another")
        expression = schedule.check(cron)
        if not isinstance(config, dict):
            raise control.ControlError("the tap's config must hold a JSON object")
        spec = taps.parse_spec(tap)
        try:
            box = sandbox.choose(settings.sandbox, settings.tap_user)
        except sandbox.SandboxError as exc:
            raise taps.TapError(str(exc)) from None
        installed = taps.install(
            Path(settings.taps_dir),
            spec,
            settings.install_timeout_s,
            settings.install_policy(),
            box,
        )
        discovered = taps.discover(installed, config, sandbox=box)
        chosen = catalog.select(discovered, select or [], replication_keys or {})
        return integrations.create(
            conn,
            settings.secret_key.get_secret_value(),
            client_id=client_id,
            name=name,
            tap_package=installed.package,
            tap_version=installed.version,
            tap_executable=installed.executable.name,
            config=config,
            secret_keys=redact.secret_keys(config, secret or []),
            catalog=chosen,
            schedule=expression,
            next_run_at=schedule.next_run(expression, datetime.now(UTC)),
        )


def owned(conn: control.Connection, name: str, client_id: int | None) -> dict[str, Any]:
    """The integration ``name`` (of ``client_id``, when given); NotFound otherwise."""
    found = integrations.get(conn, name)
    if found is None or (client_id is not None and found["client_id"] != client_id):
        raise control.NotFound(f"no integration named {name!r}")
    return found


def by_id(conn: control.Connection, integration_id: int, client_id: int | None) -> dict[str, Any]:
    """The integration with this id (Stitch's ``source_id``), of ``client_id`` when given; one
    answer, "no source N", for an unknown id and another client's (names are not revealed)."""
    with conn, conn.cursor() as cur:
        cur.execute(
            "SELECT name FROM integrations WHERE integration_id = %s"
            " AND (%s::bigint IS NULL OR client_id = %s)",
            (integration_id, client_id, client_id),
        )
        row = cur.fetchone()
    if row is None:
        raise control.NotFound(f"no source {integration_id}")
    return owned(conn, row[0], client_id)


def listed(conn: control.Connection, client_id: int) -> list[dict[str, Any]]:
    return integrations.list_for_client(conn, client_id)


def run_now(conn: control.Connection, name: str) -> dict[str, Any]:
    """Ask the extractor to run it at its next tick (a paused one is refused)."""
    return integrations.request_run(conn, name)


def started_after(conn: control.Connection, name: str, after_run_id: int) -> dict[str, Any] | None:
    """The first run of ``name`` past ``after_run_id``, once the extractor has started one."""
    newer = [r for r in list_runs(conn, name, 3) if r["run_id"] > after_run_id]
    return newer[-1] if newer else None


def last_run_id(conn: control.Connection, name: str) -> int:
    runs = list_runs(conn, name, limit=1)
    return int(runs[0]["run_id"]) if runs else 0


def running(conn: control.Connection, name: str) -> dict[str, Any] | None:
    return next((r for r in list_runs(conn, name, 1) if r["status"] == "running"), None)


def stop(conn: control.Connection, name: str) -> int | None:
    """Ask the extractor to stop the running run; its id, or None when none runs."""
    return integrations.request_stop(conn, name)


def runs(conn: control.Connection, name: str, limit: int, stderr: bool) -> list[dict[str, Any]]:
    return list_runs(conn, name, limit, stderr)


def run_log(conn: control.Connection, name: str, run_id: int) -> dict[str, Any]:
    """One run with its tap's stderr (secrets redacted when it was stored)."""
    found = owned(conn, name, None)
    with conn, conn.cursor() as cur:
        cur.execute(
            "SELECT status, started_at, ended_at, error, coalesce(stderr, '')"
            " FROM integration_runs WHERE run_id = %s AND integration_id = %s",
            (run_id, found["integration_id"]),
        )
        row = cur.fetchone()
    if row is None:
        raise control.NotFound(f"no run {run_id} of {name!r}")
    return {
        "name": name,
        "run_id": run_id,
        "status": row[0],
        "started_at": row[1].isoformat(),
        "ended_at": control.iso(row[2]),
        "error": row[3],
        "stderr": row[4],
    }


def pause(conn: control.Connection, name: str) -> dict[str, Any]:
    integrations.set_paused(conn, name, True, None)
    return integrations.require(conn, name)


def reset(conn: control.Connection, name: str, stream: str | None = None) -> dict[str, Any]:
    """Clear the bookmark of ``stream`` (or every stream): the next run re-extracts it and,
    when it succeeds, swaps the table in whole (``activate_version``)."""
    return integrations.reset(conn, name, stream)


def resume(conn: control.Connection, name: str) -> dict[str, Any]:
    """Schedule it again, from its next scheduled time."""
    found = integrations.require(conn, name)
    next_run_at = schedule.next_run(found["schedule"], datetime.now(UTC))
    integrations.set_paused(conn, name, False, next_run_at)
    return integrations.require(conn, name)


def streams_of(conn: control.Connection, name: str) -> list[str]:
    """Every stream the tap's catalog has (selected or not)."""
    return catalog.stream_names(integrations.stored_catalog(conn, name))


def configure(
    conn: control.Connection,
    name: str,
    *,
    cron: str | None = None,
    select: list[str] | None = None,
) -> dict[str, Any]:
    """Change its schedule and/or the streams it replicates (chosen from the catalog the tap
    discovered when it was added; an empty list selects every stream). A stream keeps its
    replication key while it stays selected. Takes effect from the next run."""
    found = integrations.require(conn, name)
    if cron is None and select is None:
        raise control.ControlError("give a schedule or the streams to replicate")
    with refusals():
        expression = schedule.check(cron) if cron is not None else None
        chosen = None
        if select is not None:
            stored = integrations.stored_catalog(conn, name)
            wanted = select or catalog.stream_names(stored)  # none named: every stream
            keys = {
                s["stream"]: s["replication_key"]
                for s in catalog.selected_streams(stored)
                if s["replication_key"] and s["stream"] in wanted
            }
            chosen = catalog.select(stored, wanted, keys)
    next_run_at = (
        schedule.next_run(expression, datetime.now(UTC))
        if expression is not None and not found["paused"]
        else None
    )
    integrations.configure(conn, name, catalog=chosen, schedule=expression, next_run_at=next_run_at)
    return integrations.require(conn, name)


def remove(conn: control.Connection, name: str) -> dict[str, Any]:
    """Delete it with its run history; revoke its API token."""
    removed = integrations.remove(conn, name)
    return {"name": name, "removed": True, "integration_id": removed["integration_id"]}


def client_runs(
    conn: control.Connection, client_id: int, offset: int, limit: int
) -> tuple[list[dict[str, Any]], int]:
    """A page of the runs of every integration of the client, newest first, and their total."""
    with conn, conn.cursor() as cur:
        cur.execute(
            "SELECT r.run_id, i.integration_id, i.name, i.tap_package, r.status, r.started_at,"
            " r.ended_at, r.error"
            " FROM integration_runs r JOIN integrations i USING (integration_id)"
            " WHERE i.client_id = %s ORDER BY r.run_id DESC OFFSET %s LIMIT %s",
            (client_id, offset, limit),
        )
        rows = cur.fetchall()
        cur.execute(
            "SELECT count(*) FROM integration_runs r JOIN integrations i USING (integration_id)"
            " WHERE i.client_id = %s",
            (client_id,),
        )
        total = cur.fetchone()
    return [
        {
            "run_id": r[0],
            "integration_id": r[1],
            "name": r[2],
            "tap": r[3],
            "status": r[4],
            "started_at": r[5].isoformat(),
            "ended_at": control.iso(r[6]),
            "error": r[7],
        }
        for r in rows
    ], int(total[0] if total else 0)


def stream_sources(conn: control.Connection, client_id: int) -> dict[str, str]:
    """Table name -> the name of the client's integration whose catalog selects that stream
    (tables pushed through the Import API have none)."""
    from services.extractor.catalog import selected_streams

    with conn, conn.cursor() as cur:
        cur.execute(
            "SELECT name, catalog FROM integrations WHERE client_id = %s ORDER BY integration_id",
            (client_id,),
        )
        rows = cur.fetchall()
    return {s["stream"]: name for name, cat in rows for s in selected_streams(cat)}
