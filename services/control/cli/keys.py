"""``skein keys``: keys of the control service's HTTP API."""

from __future__ import annotations

from typing import Annotated

import typer

from services.control import keys
from services.control.cli.shared import control_db, emit, fail

keys_app = typer.Typer(no_args_is_help=True, help="Keys of the control service's HTTP API.")


@keys_app.command("create")
def keys_create(
    operator: Annotated[
        bool, typer.Option("--operator", help="A key for every client (an operator's).")
    ] = False,
    client: Annotated[int | None, typer.Option("--client", help="A key for this client.")] = None,
    name: Annotated[str, typer.Option(help="What the key is for.")] = "",
) -> None:
    """Create a key of the control service's HTTP API: `{"key_id", "key": "sko_..." | "skc_..."}`,
    the key printed this once only (it is stored hashed). An operator key acts on every client,
    a client key on its own."""
    if operator == (client is not None):
        fail("give either --operator or --client CLIENT_ID")
    with control_db() as conn:
        created = keys.create(conn, client, name)
    emit({"key_id": created["key_id"], "key": created["key"]})


@keys_app.command("list")
def keys_list(
    client: Annotated[int | None, typer.Option("--client", help="Only this client's.")] = None,
) -> None:
    """Keys, revoked ones included; never a key itself."""
    with control_db() as conn:
        emit({"keys": keys.listed(conn, client)})


@keys_app.command("revoke")
def keys_revoke(key_id: int) -> None:
    """Revoke a key: its next request is refused (401)."""
    with control_db() as conn:
        emit({"key_id": key_id, "revoked": keys.revoke(conn, key_id)})
