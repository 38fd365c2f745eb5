"""``/clients/{client_id}/access``: the client's Import API tokens and webhooks. A new one is
shown once (with a copy button), then only its prefix; each can be revoked."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Path, Request
from fastapi.responses import RedirectResponse, Response

from common import control, tokens
from services.control import webhooks
from services.control.api.base import INT8, control_of
from services.control.console.pages import ClientId
from services.control.console.web import (
    SECURITY_HEADERS,
    Changer,
    PageError,
    Viewer,
    attempt,
    client_page,
    own,
)

router = APIRouter(include_in_schema=False)
LISTED = 200
ItemId = Annotated[int, Path(ge=1, le=INT8)]


async def _page(
    request: Request,
    client_id: int,
    *,
    created: dict[str, Any] | None = None,
    error: str | None = None,
    values: dict[str, str] | None = None,
    status: int = 200,
) -> Response:
    def read(conn: control.Connection) -> dict[str, Any]:
        return {
            "tokens": tokens.list_api_tokens(conn, client_id, limit=LISTED),
            "webhooks": webhooks.list_webhooks(conn, client_id, limit=LISTED),
        }

    return await client_page(
        request,
        client_id,
        "access.html",
        read,
        status,
        created=created,
        error=error,
        values=values or {},
    )


@router.get("/clients/{client_id}/access")
async def access_page(request: Request, client_id: ClientId, _user: Viewer) -> Response:
    return await _page(request, client_id)


@router.post("/clients/{client_id}/tokens")
async def token_create(request: Request, client_id: ClientId, user: Changer) -> Response:
    ctl = control_of(request)
    await own(ctl, user, client_id)
    created = await ctl.run(lambda conn: tokens.create_api_token(conn, client_id))
    created["kind"] = "token"
    return await _page(request, client_id, created=created, status=201)


@router.post("/clients/{client_id}/webhooks")
async def webhook_create(
    request: Request,
    client_id: ClientId,
    user: Changer,
    table_name: Annotated[str, Form(max_length=1000)] = "",
    key_field: Annotated[str, Form(max_length=1000)] = "",
) -> Response:
    ctl = control_of(request)
    await own(ctl, user, client_id)
    created, error = await attempt(
        lambda: ctl.run(
            lambda conn: webhooks.create_webhook(
                conn, client_id, table_name.strip(), key_field.strip() or None
            )
        )
    )
    if created is None:
        values = {"table_name": table_name, "key_field": key_field}
        return await _page(request, client_id, error=error, values=values, status=400)
    created["kind"] = "webhook"
    return await _page(request, client_id, created=created, status=201)


# What a revoke button revokes, by the path's kind: each takes (conn, item_id, client_id).
REVOKE = {"tokens": tokens.revoke_api_token, "webhooks": webhooks.revoke_webhook}


@router.post("/clients/{client_id}/{kind}/{item_id}/revoke")
async def revoke(
    request: Request,
    client_id: ClientId,
    kind: str,
    item_id: ItemId,
    user: Changer,
) -> Response:
    action = REVOKE.get(kind)
    if action is None:  # no such button: what any unknown page answers
        raise PageError(404, "Not found.")
    ctl = control_of(request)
    await own(ctl, user, client_id)
    await attempt(lambda: ctl.run(lambda conn: action(conn, item_id, client_id)))
    return RedirectResponse(f"/clients/{client_id}/access", 303, headers=SECURITY_HEADERS)
