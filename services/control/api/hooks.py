"""Notification hooks and their deliveries (``services/control/hooks.py``); the schema log
and the kept rejected records (``services/control/loadlog.py``)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query

from common import netpolicy
from services.control import hooks, loadlog
from services.control.api.base import After, Caller, ClientId, Ctl, Limit
from services.control.api.models import HookIn

router = APIRouter()
State = Annotated[str | None, Query(description="Only deliveries in this state.")]


@router.get("/v1/clients/{client_id}/hooks", tags=["hooks"])
async def hooks_list(
    ctl: Ctl, client_id: ClientId, key: Caller, after: After = 0, limit: Limit = None
) -> dict[str, Any]:
    await ctl.own(key, client_id)
    return await ctl.paged(
        limit, "hook_id", lambda conn, n: hooks.list_hooks(conn, client_id, after=after, limit=n)
    )


@router.post("/v1/clients/{client_id}/hooks", status_code=201, tags=["hooks"])
async def hooks_create(ctl: Ctl, client_id: ClientId, body: HookIn, key: Caller) -> dict[str, Any]:
    """A new hook; a generated ``secret`` is in this answer only."""
    await ctl.own(key, client_id)
    policy = netpolicy.from_settings(ctl.settings)
    keys = ctl.settings.secret_key.get_secret_value()
    return await ctl.run(
        lambda conn: hooks.create_hook(
            conn, policy, keys, client_id, body.url, body.events, body.secret
        )
    )


@router.delete("/v1/clients/{client_id}/hooks/{hook_id}", tags=["hooks"])
async def hooks_remove(
    ctl: Ctl, client_id: ClientId, hook_id: ClientId, key: Caller
) -> dict[str, Any]:
    await ctl.own(key, client_id)
    removed = await ctl.run(lambda conn: hooks.remove_hook(conn, hook_id, client_id))
    return {"hook_id": hook_id, "removed": removed}


@router.get("/v1/clients/{client_id}/hook-deliveries", tags=["hooks"])
async def deliveries_list(
    ctl: Ctl,
    client_id: ClientId,
    key: Caller,
    state: State = None,
    after: After = 0,
    limit: Limit = None,
) -> dict[str, Any]:
    await ctl.own(key, client_id)
    return await ctl.paged(
        limit,
        "delivery_id",
        lambda conn, n: hooks.list_deliveries(conn, client_id, state=state, after=after, limit=n),
    )


@router.post("/v1/clients/{client_id}/hook-deliveries/{delivery_id}/redeliver", tags=["hooks"])
async def deliveries_redeliver(
    ctl: Ctl, client_id: ClientId, delivery_id: ClientId, key: Caller
) -> dict[str, Any]:
    """Send a delivered or dead event again (409 while it is still being tried)."""
    await ctl.own(key, client_id)
    return await ctl.run(lambda conn: hooks.redeliver(conn, delivery_id, client_id))


Table = Annotated[str | None, Query(min_length=1, max_length=1000, description="One table.")]


@router.get("/v1/clients/{client_id}/schema-log", tags=["hooks"])
async def schema_log(
    ctl: Ctl,
    client_id: ClientId,
    key: Caller,
    table: Table = None,
    after: After = 0,
    limit: Limit = None,
) -> dict[str, Any]:
    """As ``skein schema log``: the schema changes loads made, oldest first."""
    await ctl.own(key, client_id)
    return await ctl.paged(
        limit,
        "change_id",
        lambda conn, n: loadlog.schema_log(conn, client_id, table=table, after=after, limit=n),
    )


@router.get("/v1/clients/{client_id}/rejected", tags=["hooks"])
async def rejected(
    ctl: Ctl,
    client_id: ClientId,
    key: Caller,
    table: Table = None,
    since: Annotated[datetime | None, Query(description="At or after this time.")] = None,
    after: After = 0,
    limit: Limit = None,
) -> dict[str, Any]:
    """As ``skein rejected ls``: rejected records with their reasons, oldest first."""
    await ctl.own(key, client_id)
    at = since if since is None or since.tzinfo else since.replace(tzinfo=UTC)
    return await ctl.paged(
        limit,
        "rejection_id",
        lambda conn, n: loadlog.rejected(
            conn, client_id, table=table, since=at, after=after, limit=n
        ),
    )
