"""Clients, their limits, platform grants and audit log; status."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Query
from fastapi.responses import Response

from common import audit, control, destination_config
from services.control import accounts
from services.control.api.base import INT8, After, Caller, ClientId, Ctl, Limit, operator
from services.control.api.models import ClientIn, GrantIn, GrantKind, LimitsIn
from services.spool import status as table_status

router = APIRouter()


# --- clients ------------------------------------------------------------------------------


@router.get("/v1/clients", tags=["clients"])
async def clients_list(
    ctl: Ctl, key: Caller, after: After = 0, limit: Limit = None
) -> dict[str, Any]:
    """Clients, oldest first: every one for an operator key, its own for a client key."""
    if key.client_id is not None:
        own_id = key.client_id
        found = await ctl.run(lambda conn: accounts.get_client(conn, own_id))
        return {"data": [found] if found and own_id > after else [], "next_after": None}
    return await ctl.paged(
        limit, "client_id", lambda conn, n: accounts.list_clients(conn, after=after, limit=n)
    )


@router.post("/v1/clients", status_code=201, tags=["clients"])
async def clients_create(ctl: Ctl, body: ClientIn, key: Caller) -> dict[str, Any]:
    operator(key)
    return await ctl.run(lambda conn: accounts.create_client(conn, body.name))


@router.get("/v1/clients/{client_id}", tags=["clients"])
async def clients_get(ctl: Ctl, client_id: ClientId, key: Caller) -> dict[str, Any]:
    await ctl.own(key, client_id)
    found = await ctl.run(lambda conn: accounts.get_client(conn, client_id))
    assert found is not None
    return found


@router.get("/v1/clients/{client_id}/limits", tags=["clients"])
async def limits_get(ctl: Ctl, client_id: ClientId, key: Caller) -> dict[str, Any]:
    await ctl.own(key, client_id)
    return await ctl.run(lambda conn: accounts.get_limits(conn, client_id))


@router.patch("/v1/clients/{client_id}/limits", tags=["clients"])
async def limits_set(ctl: Ctl, client_id: ClientId, body: LimitsIn, key: Caller) -> dict[str, Any]:
    """Only the limits named in the body change (null: back to the gate's default)."""
    operator(key)
    await ctl.own(key, client_id)
    changes = body.model_dump(exclude_unset=True)
    return await ctl.run(lambda conn: accounts.set_limits(conn, client_id, changes))


@router.get("/v1/clients/{client_id}/grants", tags=["clients"])
async def grants_list(ctl: Ctl, client_id: ClientId, key: Caller) -> dict[str, Any]:
    """The platform credentials this client may use (``skein clients allow``)."""
    await ctl.own(key, client_id)
    grants = await ctl.run(lambda conn: destination_config.list_grants(conn, client_id))
    return {"client_id": client_id, "grants": grants}


@router.post("/v1/clients/{client_id}/grants", tags=["clients"])
async def grants_add(ctl: Ctl, client_id: ClientId, body: GrantIn, key: Caller) -> dict[str, Any]:
    operator(key)
    await ctl.own(key, client_id)
    grants = await ctl.run(
        lambda conn: accounts.grant_platform(conn, client_id, body.kind, body.value)
    )
    return {"client_id": client_id, "grants": grants}


@router.delete("/v1/clients/{client_id}/grants", tags=["clients"])
async def grants_remove(
    ctl: Ctl,
    client_id: ClientId,
    kind: Annotated[GrantKind, Query()],
    value: Annotated[str, Query(min_length=1, max_length=2048)],
    key: Caller,
) -> dict[str, Any]:
    """Take one grant back (``?kind=&value=``)."""
    operator(key)
    await ctl.own(key, client_id)
    grants = await ctl.run(lambda conn: accounts.revoke_platform(conn, client_id, kind, value))
    return {"client_id": client_id, "grants": grants}


@router.get("/v1/audit", tags=["clients"])
async def audit_list(
    ctl: Ctl,
    key: Caller,
    client_id: Annotated[int | None, Query(ge=1, le=INT8)] = None,
    since: Annotated[datetime | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> dict[str, Any]:
    """Control-plane changes, newest first (``skein audit ls``); a client key: its own."""
    if key.client_id is not None:
        if client_id not in (None, key.client_id):
            raise control.NotFound(f"no client {client_id}")
        client_id = key.client_id
    found = await ctl.run(
        lambda conn: audit.entries(conn, client_id=client_id, since=since, limit=limit)
    )
    return {"entries": found}


# --- status -------------------------------------------------------------------------------


@router.get("/v1/status", tags=["status"])
async def status(
    ctl: Ctl,
    key: Caller,
    client_id: Annotated[int | None, Query(ge=1, le=INT8)] = None,
    objective: Annotated[float, Query(ge=1)] = table_status.FRESHNESS_OBJECTIVE_S,
    after_client: Annotated[int | None, Query(ge=0, le=INT8)] = None,
    after_table: Annotated[str, Query(max_length=255)] = "",
    limit: Limit = None,
) -> Response:
    """As ``skein status``, a page of tables at a time (ordered by client, then table):
    last load, freshness, waiting and dead batches; ``healthy`` and ``unhealthy`` cover
    the page. The next page: ``after_client`` and ``after_table`` from ``next_after``."""
    if key.client_id is not None:
        if client_id is not None and client_id != key.client_id:
            raise control.NotFound(f"no client {client_id}")
        client_id = key.client_id
    n = ctl.size(limit)
    after = None if after_client is None else (after_client, after_table)

    def assess(conn: control.Connection) -> dict[str, Any]:
        found = table_status.tables(conn, client_id, after=after, limit=n + 1)
        more = len(found) > n
        report = table_status.report(found[:n], objective)
        last = found[n - 1] if more else None
        report["next_after"] = (
            None if last is None else {"client_id": last.client_id, "table_name": last.table_name}
        )
        return report

    # thousands of tables: orjson, not FastAPI's generic encoder
    return Response(orjson.dumps(await ctl.run(assess)), media_type="application/json")
