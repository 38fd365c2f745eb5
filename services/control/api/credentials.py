"""Import API tokens, webhook URLs and the API's own keys."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from common import tokens
from services.control import keys, webhooks
from services.control.api.base import After, Caller, ClientId, Ctl, Limit, operator
from services.control.api.models import KeyIn, WebhookIn

router = APIRouter()


# --- Import API tokens --------------------------------------------------------------------


@router.get("/v1/clients/{client_id}/tokens", tags=["tokens"])
async def tokens_list(
    ctl: Ctl, client_id: ClientId, key: Caller, after: After = 0, limit: Limit = None
) -> dict[str, Any]:
    await ctl.own(key, client_id)
    return await ctl.paged(
        limit,
        "token_id",
        lambda conn, n: tokens.list_api_tokens(conn, client_id, after=after, limit=n),
    )


@router.post("/v1/clients/{client_id}/tokens", status_code=201, tags=["tokens"])
async def tokens_create(ctl: Ctl, client_id: ClientId, key: Caller) -> dict[str, Any]:
    """A new Import API token; ``token`` is in this answer only."""
    await ctl.own(key, client_id)
    return await ctl.run(lambda conn: tokens.create_api_token(conn, client_id))


@router.delete("/v1/clients/{client_id}/tokens/{token_id}", tags=["tokens"])
async def tokens_revoke(
    ctl: Ctl, client_id: ClientId, token_id: ClientId, key: Caller
) -> dict[str, Any]:
    await ctl.own(key, client_id)
    revoked = await ctl.run(lambda conn: tokens.revoke_api_token(conn, token_id, client_id))
    return {"token_id": token_id, "revoked": revoked}


# --- webhooks -----------------------------------------------------------------------------


@router.get("/v1/clients/{client_id}/webhooks", tags=["webhooks"])
async def webhooks_list(
    ctl: Ctl, client_id: ClientId, key: Caller, after: After = 0, limit: Limit = None
) -> dict[str, Any]:
    await ctl.own(key, client_id)
    return await ctl.paged(
        limit,
        "webhook_id",
        lambda conn, n: webhooks.list_webhooks(conn, client_id, after=after, limit=n),
    )


@router.post("/v1/clients/{client_id}/webhooks", status_code=201, tags=["webhooks"])
async def webhooks_create(
    ctl: Ctl, client_id: ClientId, body: WebhookIn, key: Caller
) -> dict[str, Any]:
    """A new webhook URL; its token is in this answer only."""
    await ctl.own(key, client_id)
    return await ctl.run(
        lambda conn: webhooks.create_webhook(conn, client_id, body.table_name, body.key_field)
    )


@router.delete("/v1/clients/{client_id}/webhooks/{webhook_id}", tags=["webhooks"])
async def webhooks_revoke(
    ctl: Ctl, client_id: ClientId, webhook_id: ClientId, key: Caller
) -> dict[str, Any]:
    await ctl.own(key, client_id)
    revoked = await ctl.run(lambda conn: webhooks.revoke_webhook(conn, webhook_id, client_id))
    return {"webhook_id": webhook_id, "revoked": revoked}


# --- API keys (operators) -----------------------------------------------------------------


@router.get("/v1/keys", tags=["keys"])
async def keys_list(ctl: Ctl, key: Caller, after: After = 0, limit: Limit = None) -> dict[str, Any]:
    operator(key)
    return await ctl.paged(limit, "key_id", lambda conn, n: keys.listed(conn, after=after, limit=n))


@router.post("/v1/keys", status_code=201, tags=["keys"])
async def keys_create(ctl: Ctl, body: KeyIn, key: Caller) -> dict[str, Any]:
    """``client_id`` null: an operator key. The key is in this answer only."""
    operator(key)
    return await ctl.run(lambda conn: keys.create(conn, body.client_id, body.name))


@router.delete("/v1/keys/{key_id}", tags=["keys"])
async def keys_revoke(ctl: Ctl, key_id: ClientId, key: Caller) -> dict[str, Any]:
    operator(key)
    return {"key_id": key_id, "revoked": await ctl.run(lambda conn: keys.revoke(conn, key_id))}
