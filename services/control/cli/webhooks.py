"""``skein webhooks``: webhook URLs."""

from __future__ import annotations

from typing import Annotated

import typer

from services.control import webhooks
from services.control.cli.shared import control_db, emit, require_client

webhooks_app = typer.Typer(no_args_is_help=True, help="Webhook endpoints.")


@webhooks_app.command("create")
def webhooks_create(
    client_id: int,
    table: Annotated[str, typer.Option(help="Table the posted objects load into.")] = "data",
    key: Annotated[
        str | None, typer.Option(help="Top-level field that is the primary key (upserts).")
    ] = None,
) -> None:
    """Issue a webhook URL, `/v1/clients/<id>/token/whk_...`. Its token is printed now and
    never again."""
    with control_db() as conn:
        emit(webhooks.create_webhook(conn, client_id, table, key))


@webhooks_app.command("list")
def webhooks_list(client_id: int) -> None:
    """A client's webhooks (prefixes only, never the tokens)."""
    with control_db() as conn:
        require_client(conn, client_id)
        emit({"client_id": client_id, "webhooks": webhooks.list_webhooks(conn, client_id)})


@webhooks_app.command("revoke")
def webhooks_revoke(webhook_id: int) -> None:
    """Revoke a webhook; "revoked" is false if it already was."""
    with control_db() as conn:
        emit({"webhook_id": webhook_id, "revoked": webhooks.revoke_webhook(conn, webhook_id)})
