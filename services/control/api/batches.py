"""The spool's batches, as ``skein spool``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query

from common import control
from services.control import keys
from services.control.api.base import INT8, After, Caller, ClientId, Control, Ctl, Limit, operator
from services.control.api.models import PurgeIn, ReplayIn
from services.spool import operations, replay
from services.spool.objects import BatchObjects
from services.spool.settings import SpoolSettings

router = APIRouter()


# --- spool batches ------------------------------------------------------------------------


@router.get("/v1/batches", tags=["batches"])
async def batches_list(
    ctl: Ctl,
    key: Caller,
    state: Annotated[
        str | None, Query(pattern="^(pending|leased|retry_wait|loaded|dead|skipped)$")
    ] = None,
    client_id: Annotated[int | None, Query(ge=1, le=INT8)] = None,
    after: After = 0,
    limit: Limit = None,
) -> dict[str, Any]:
    """Batches by id; a client key sees its own client's only."""
    if key.client_id is not None:
        if client_id not in (None, key.client_id):
            raise control.NotFound(f"no client {client_id}")
        client_id = key.client_id
    return await ctl.paged(
        limit,
        "batch_id",
        lambda conn, n: operations.page_batches(
            conn, state=state, client_id=client_id, after=after, limit=n
        ),
    )


@router.get("/v1/batches/stats", tags=["batches"])
async def batches_stats(ctl: Ctl, key: Caller) -> dict[str, Any]:
    """Open batches by destination type and state; live leases (operators)."""
    operator(key)
    return await ctl.run(operations.stats)


async def batch_of(ctl: Control, key: keys.Key, batch_id: int) -> None:
    found = await ctl.run(lambda conn: operations.get_batch(conn, batch_id))
    if not key.may_act_for(found["client_id"]):
        raise operations.NotFound(f"no batch {batch_id}")


@router.post("/v1/batches/{batch_id}/retry", tags=["batches"])
async def batches_retry(ctl: Ctl, batch_id: ClientId, key: Caller) -> dict[str, Any]:
    """Put a dead batch back to pending (to its client's destination as it is now)."""
    await batch_of(ctl, key, batch_id)
    return {"retried": await ctl.run(lambda conn: operations.retry(conn, batch_id))}


@router.post("/v1/batches/{batch_id}/skip", tags=["batches"])
async def batches_skip(ctl: Ctl, batch_id: ClientId, key: Caller) -> dict[str, Any]:
    """Give up on a dead batch so its table's later batches can load."""
    await batch_of(ctl, key, batch_id)
    return {"skipped": await ctl.run(lambda conn: operations.skip(conn, batch_id))}


@router.post("/v1/batches/retry-dead", tags=["batches"])
async def batches_retry_dead(ctl: Ctl, key: Caller) -> dict[str, Any]:
    """Every dead batch back to pending (operators)."""
    operator(key)
    return {"retried": await ctl.run(lambda conn: operations.retry(conn, None))}


@router.post("/v1/batches/purge", tags=["batches"])
async def batches_purge(ctl: Ctl, body: PurgeIn, key: Caller) -> dict[str, Any]:
    """Delete the S3 objects of batches loaded longer ago than the retention (operators)."""
    operator(key)
    spool_settings = SpoolSettings()
    days = body.older_than_days or spool_settings.retention_days
    if days <= 0:
        raise control.ControlError("retention is off (0 days): nothing is purged")
    objects = BatchObjects(spool_settings)

    def purge(conn: control.Connection) -> int:
        purged = 0
        while done := operations.purge_loaded(conn, days * 86400, objects.delete):
            purged += done
        return purged

    return {"purged": await ctl.run_long(purge), "older_than_days": days}


def _utc(at: datetime) -> datetime:
    return at if at.tzinfo else at.replace(tzinfo=UTC)


@router.post("/v1/clients/{client_id}/replay", tags=["batches"])
async def replay_batches(
    ctl: Ctl, client_id: ClientId, body: ReplayIn, key: Caller
) -> dict[str, Any]:
    """As ``skein replay``: the client's loaded batches in the window enqueued again (times
    without a zone are UTC); ``dry_run`` only says what would be."""
    await ctl.own(key, client_id)
    return await ctl.run(
        lambda conn: replay.replay(
            conn,
            client_id,
            since=_utc(body.since),
            until=_utc(body.until) if body.until else None,
            table=body.table,
            dry_run=body.dry_run,
        )
    )
