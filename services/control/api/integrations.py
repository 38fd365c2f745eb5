"""Singer integrations, as ``skein integrations``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Query

from common import control
from services.control import integrations, keys
from services.control.api.base import Caller, ClientId, Control, Ctl, Name
from services.control.api.models import IntegrationIn, IntegrationSettingsIn
from services.extractor.settings import ExtractorSettings

router = APIRouter()
T = TypeVar("T")


# --- integrations -------------------------------------------------------------------------


@router.get("/v1/clients/{client_id}/integrations", tags=["integrations"])
async def integrations_list(ctl: Ctl, client_id: ClientId, key: Caller) -> dict[str, Any]:
    await ctl.own(key, client_id)
    found = await ctl.run(lambda conn: integrations.listed(conn, client_id))
    return {"data": found, "next_after": None}


@router.post("/v1/clients/{client_id}/integrations", status_code=201, tags=["integrations"])
async def integrations_add(
    ctl: Ctl, client_id: ClientId, body: IntegrationIn, key: Caller
) -> dict[str, Any]:
    """Install the tap, discover its streams, store the integration (seconds to minutes)."""
    await ctl.own(key, client_id)

    def add(conn: control.Connection) -> dict[str, Any]:
        return integrations.add(
            conn,
            ExtractorSettings(),
            client_id=client_id,
            name=body.name,
            tap=body.tap,
            config=body.config,
            cron=body.schedule,
            select=body.select,
            replication_keys=body.replication_keys,
            secret=body.secret_keys,
        )

    return await ctl.run_long(add)


async def integration(ctl: Control, key: keys.Key, client_id: int, name: str) -> dict[str, Any]:
    await ctl.own(key, client_id)
    return await ctl.run(lambda conn: integrations.owned(conn, name, client_id))


async def on_integration(
    ctl: Control,
    key: keys.Key,
    client_id: int,
    name: str,
    act: Callable[[control.Connection, str], T],
) -> T:
    """``act(conn, name)``, once the client is the key's and ``name`` the client's (else 404)."""
    await integration(ctl, key, client_id, name)
    return await ctl.run(lambda conn: act(conn, name))


@router.get("/v1/clients/{client_id}/integrations/{name}", tags=["integrations"])
async def integrations_get(
    ctl: Ctl, client_id: ClientId, name: Name, key: Caller
) -> dict[str, Any]:
    return await integration(ctl, key, client_id, name)


@router.patch("/v1/clients/{client_id}/integrations/{name}", tags=["integrations"])
async def integrations_set(
    ctl: Ctl, client_id: ClientId, name: Name, body: IntegrationSettingsIn, key: Caller
) -> dict[str, Any]:
    """As ``skein integrations set``: its schedule and/or streams, from the next run on."""
    return await on_integration(
        ctl,
        key,
        client_id,
        name,
        lambda conn, name: integrations.configure(
            conn, name, cron=body.schedule, select=body.select
        ),
    )


@router.post("/v1/clients/{client_id}/integrations/{name}/run", tags=["integrations"])
async def integrations_run(
    ctl: Ctl, client_id: ClientId, name: Name, key: Caller
) -> dict[str, Any]:
    """Ask the extractor to run it at its next tick."""
    return await on_integration(ctl, key, client_id, name, integrations.run_now)


@router.post("/v1/clients/{client_id}/integrations/{name}/stop", tags=["integrations"])
async def integrations_stop(
    ctl: Ctl, client_id: ClientId, name: Name, key: Caller
) -> dict[str, Any]:
    """Stop the running run (the next run resumes from the saved state)."""
    run_id = await on_integration(ctl, key, client_id, name, integrations.stop)
    return {"name": name, "stopping": run_id is not None, "run_id": run_id}


@router.get("/v1/clients/{client_id}/integrations/{name}/runs", tags=["integrations"])
async def integrations_runs(
    ctl: Ctl,
    client_id: ClientId,
    name: Name,
    key: Caller,
    limit: Annotated[int, Query(ge=1, le=1000)] = 20,
    stderr: bool = False,
) -> dict[str, Any]:
    runs = await on_integration(
        ctl, key, client_id, name, lambda conn, name: integrations.runs(conn, name, limit, stderr)
    )
    return {"data": runs, "next_after": None}


@router.get("/v1/clients/{client_id}/integrations/{name}/runs/{run_id}/log", tags=["integrations"])
async def integrations_log(
    ctl: Ctl, client_id: ClientId, name: Name, run_id: ClientId, key: Caller
) -> dict[str, Any]:
    """One run's tap stderr (secrets redacted)."""
    return await on_integration(
        ctl, key, client_id, name, lambda conn, name: integrations.run_log(conn, name, run_id)
    )


@router.post("/v1/clients/{client_id}/integrations/{name}/pause", tags=["integrations"])
async def integrations_pause(
    ctl: Ctl, client_id: ClientId, name: Name, key: Caller
) -> dict[str, Any]:
    return await on_integration(ctl, key, client_id, name, integrations.pause)


@router.post("/v1/clients/{client_id}/integrations/{name}/reset", tags=["integrations"])
async def integrations_reset(
    ctl: Ctl,
    client_id: ClientId,
    name: Name,
    key: Caller,
    stream: Annotated[str | None, Query(min_length=1, max_length=1000)] = None,
) -> dict[str, Any]:
    """As ``skein integrations reset``: the bookmark of ``stream`` (else of all) cleared."""
    return await on_integration(
        ctl, key, client_id, name, lambda conn, name: integrations.reset(conn, name, stream)
    )


@router.post("/v1/clients/{client_id}/integrations/{name}/resume", tags=["integrations"])
async def integrations_resume(
    ctl: Ctl, client_id: ClientId, name: Name, key: Caller
) -> dict[str, Any]:
    return await on_integration(ctl, key, client_id, name, integrations.resume)


@router.delete("/v1/clients/{client_id}/integrations/{name}", tags=["integrations"])
async def integrations_remove(
    ctl: Ctl, client_id: ClientId, name: Name, key: Caller
) -> dict[str, Any]:
    return await on_integration(ctl, key, client_id, name, integrations.remove)
