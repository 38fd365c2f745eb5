"""Stitch Connect v4: loads, extractions, log links, sync."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from fastapi.responses import JSONResponse, PlainTextResponse, RedirectResponse

from common import control
from services.control import connect, integrations
from services.control.api.base import INT8, ApiError, Caller, ClientId, Ctl, PageNo, error_response
from services.spool import status as table_status

router = APIRouter()


# --- Stitch Connect v4 (read side, and sync) ----------------------------------------------


@router.get("/v4/{client_id}/loads", tags=["connect v4"])
async def v4_loads(ctl: Ctl, client_id: ClientId, key: Caller, page: PageNo = 1) -> dict[str, Any]:
    """Each table's last load and error state (Stitch's ``loads``)."""
    await ctl.own(key, client_id)

    def loads(conn: control.Connection) -> tuple[list[dict[str, Any]], int]:
        found = table_status.tables(conn, client_id)
        sources = integrations.stream_sources(conn, client_id)
        per = ctl.settings.page_size
        chosen = found[(page - 1) * per : page * per]
        return [connect.load(client_id, t, sources.get(t.table_name)) for t in chosen], len(found)

    data, total = await ctl.run(loads)
    return connect.page(data, page, ctl.settings.page_size, total, f"/v4/{client_id}/loads")


@router.get("/v4/{client_id}/extractions", tags=["connect v4"])
async def v4_extractions(
    ctl: Ctl, client_id: ClientId, key: Caller, page: PageNo = 1
) -> dict[str, Any]:
    """The client's integration runs, newest first (Stitch's ``extractions``)."""
    await ctl.own(key, client_id)
    per = ctl.settings.page_size
    runs, total = await ctl.run(
        lambda conn: integrations.client_runs(conn, client_id, (page - 1) * per, per)
    )
    data = [connect.extraction(client_id, r) for r in runs]
    return connect.page(data, page, per, total, f"/v4/{client_id}/extractions")


@router.get("/v4/{client_id}/extractions/{job_name}", tags=["connect v4"], status_code=302)
async def v4_extraction_log(
    ctl: Ctl, client_id: ClientId, job_name: Annotated[str, Path(max_length=64)], key: Caller
) -> RedirectResponse:
    """302 to a short-lived URL of the run's log (secrets redacted)."""
    await ctl.own(key, client_id)
    parsed = connect.parse_job(job_name)
    if parsed is None or parsed[0] != client_id:
        raise control.NotFound(f"no extraction {job_name}")
    _, source_id, run_id = parsed

    def check(conn: control.Connection) -> None:
        found = integrations.by_id(conn, source_id, client_id)
        integrations.run_log(conn, found["name"], run_id)  # NotFound for another's run

    await ctl.run(check)
    return RedirectResponse(
        connect.signed_log_path(ctl.log_secret, job_name, ctl.settings.log_url_ttl_s), 302
    )


@router.get("/v4/logs/{job_name}", tags=["connect v4"], include_in_schema=False)
async def v4_log(
    ctl: Ctl,
    job_name: Annotated[str, Path(max_length=64)],
    expires: Annotated[int, Query(ge=0, le=INT8)],
    signature: Annotated[str, Query(max_length=64)],
) -> PlainTextResponse:
    """The log a signed URL names (no key: the signature, valid until ``expires``)."""
    parsed = connect.parse_job(job_name)
    if parsed is None or not connect.valid_signature(ctl.log_secret, job_name, expires, signature):
        raise ApiError(403, "forbidden", "this log URL is invalid or has expired")
    client_id, source_id, run_id = parsed

    def read(conn: control.Connection) -> dict[str, Any]:
        found = integrations.by_id(conn, source_id, client_id)
        return integrations.run_log(conn, found["name"], run_id)

    found = await ctl.run(read)
    head = f"# {job_name} {found['status']} {found['started_at']} .. {found['ended_at']}\n"
    tail = f"\n# error: {found['error']}\n" if found["error"] else ""
    return PlainTextResponse(head + found["stderr"] + tail)


@router.post("/v4/sources/{source_id}/sync", tags=["connect v4"])
async def v4_sync(ctl: Ctl, source_id: ClientId, key: Caller) -> JSONResponse:
    """Start a run now; ``{"job_name"}`` once the extractor has started it. A run already in
    progress: 409 ``already_running`` with its job name."""

    def start(conn: control.Connection) -> tuple[int, str, dict[str, Any] | None, int]:
        found = integrations.by_id(conn, source_id, key.client_id)
        busy = integrations.running(conn, found["name"])
        if busy is not None:
            return found["client_id"], found["name"], busy, 0
        last = integrations.last_run_id(conn, found["name"])
        integrations.run_now(conn, found["name"])
        return found["client_id"], found["name"], None, last

    client_id, source, busy, last = await ctl.run(start)
    if busy is not None:
        name = connect.job_name(client_id, source_id, busy["run_id"])
        return error_response(409, "already_running", f"{name} is running", {}, {"job_name": name})
    # wait for the extractor's run: short lookups, no connection held while waiting
    deadline = time.monotonic() + ctl.settings.sync_wait_s
    while True:
        run = await ctl.run(lambda conn: integrations.started_after(conn, source, last))
        if run is not None:
            return JSONResponse({"job_name": connect.job_name(client_id, source_id, run["run_id"])})
        if time.monotonic() >= deadline:
            raise ApiError(503, "unavailable", "the run was asked for; no extractor started it yet")
        await asyncio.sleep(0.25)


@router.delete("/v4/sources/{source_id}/sync", tags=["connect v4"])
async def v4_stop(ctl: Ctl, source_id: ClientId, key: Caller) -> dict[str, Any]:
    """Stop the source's running run (the next run resumes from the saved state)."""

    def stop(conn: control.Connection) -> tuple[int, int | None]:
        found = integrations.by_id(conn, source_id, key.client_id)
        return found["client_id"], integrations.stop(conn, found["name"])

    client_id, run_id = await ctl.run(stop)
    if run_id is None:
        raise ApiError(409, "conflict", f"source {source_id} has no run in progress")
    return {"job_name": connect.job_name(client_id, source_id, run_id), "stopping": True}
