"""``skein tokens``: Import API tokens."""

from __future__ import annotations

import typer

from common import tokens
from services.control.cli.shared import control_db, emit, require_client

tokens_app = typer.Typer(no_args_is_help=True, help="Import API tokens.")


@tokens_app.command("create")
def tokens_create(client_id: int) -> None:
    """Issue an Import API token (`skn_...`). The token is printed now and never again."""
    with control_db() as conn:
        emit(tokens.create_api_token(conn, client_id))


@tokens_app.command("list")
def tokens_list(client_id: int) -> None:
    """A client's API tokens (prefixes only, never the tokens)."""
    with control_db() as conn:
        require_client(conn, client_id)
        emit({"client_id": client_id, "tokens": tokens.list_api_tokens(conn, client_id)})


@tokens_app.command("revoke")
def tokens_revoke(token_id: int) -> None:
    """Revoke an API token; "revoked" is false if it already was."""
    with control_db() as conn:
        emit({"token_id": token_id, "revoked": tokens.revoke_api_token(conn, token_id)})
