"""Each client's destination: set (checked), show, test."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from common import control
from services.control import destinations
from services.control.api.base import Caller, ClientId, Ctl
from services.control.api.models import DestinationIn

router = APIRouter()


# --- destination --------------------------------------------------------------------------


@router.get("/v1/clients/{client_id}/destination", tags=["destination"])
async def destination_show(ctl: Ctl, client_id: ClientId, key: Caller) -> dict[str, Any]:
    """Settings and the names of the secrets, never their values."""
    await ctl.own(key, client_id)
    return await ctl.run(lambda conn: destinations.show(conn, ctl.settings, client_id))


@router.put("/v1/clients/{client_id}/destination", tags=["destination"])
async def destination_set(
    ctl: Ctl, client_id: ClientId, body: DestinationIn, key: Caller
) -> dict[str, Any]:
    """Create or replace the destination (the last write wins); it takes effect on the
    next load, and waiting batches follow a change of type."""
    await ctl.own(key, client_id)

    def put(conn: control.Connection) -> dict[str, Any]:
        config, secrets = destinations.settings_of(
            body.type,
            dsn=body.dsn,
            schema=body.schema_,
            settings=body.settings,
            password=None,
            secrets=body.secrets,
        )
        return destinations.put(conn, ctl.settings, client_id, body.type, config, secrets)

    return await ctl.run(put)


@router.post("/v1/clients/{client_id}/destination/test", tags=["destination"])
async def destination_test(ctl: Ctl, client_id: ClientId, key: Caller) -> dict[str, Any]:
    """Connect as the loader would and report (``ok``, ``server`` or ``error``, ``ms``)."""
    await ctl.own(key, client_id)
    raw = await ctl.run(lambda conn: destinations.stored(conn, ctl.settings, client_id))
    # the round trip holds no pooled connection, and one client tests one destination at a time
    return await ctl.probe(client_id, lambda: destinations.probe(ctl.settings, client_id, raw))
