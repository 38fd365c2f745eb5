"""``skein hooks``: notification hooks and their deliveries."""

from __future__ import annotations

from typing import Annotated

import typer

from common import netpolicy
from common.events import EVENT_TYPES
from common.settings import SharedSettings
from services.control import hooks
from services.control.cli.shared import control_db, emit, from_env, require_client

hooks_app = typer.Typer(no_args_is_help=True, help="Notification hooks (events to your URLs).")


@hooks_app.command("create")
def hooks_create(
    client_id: int,
    url: str,
    events: Annotated[
        str,
        typer.Option(metavar="E1,E2", help=f"Comma-separated events: {', '.join(EVENT_TYPES)}."),
    ],
    secret_env: Annotated[
        str | None,
        typer.Option(
            metavar="VAR", help="Environment variable holding the signing secret (else generated)."
        ),
    ] = None,
) -> None:
    """Create a hook: the events to URL, each signed (`Skein-Signature: t=,v1=`, HMAC-SHA256
    of `"<t>." + body`). A generated signing secret is printed now and never again."""
    shared = SharedSettings()
    with control_db() as conn:
        secret = from_env(secret_env) if secret_env else None
        emit(
            hooks.create_hook(
                conn,
                netpolicy.from_settings(shared),
                shared.secret_key.get_secret_value(),
                client_id,
                url,
                events.split(","),
                secret,
            )
        )


@hooks_app.command("list")
def hooks_list(client_id: Annotated[int | None, typer.Argument()] = None) -> None:
    """Live hooks (of one client, or all), never their secrets."""
    with control_db() as conn:
        if client_id is not None:
            require_client(conn, client_id)
        emit({"hooks": hooks.list_hooks(conn, client_id)})


@hooks_app.command("remove")
def hooks_remove(hook_id: int) -> None:
    """Remove a hook; its undelivered events go dead. "removed" is false if it already was."""
    with control_db() as conn:
        emit({"hook_id": hook_id, "removed": hooks.remove_hook(conn, hook_id)})


@hooks_app.command("deliveries")
def hooks_deliveries(
    client_id: int,
    state: Annotated[str | None, typer.Option(help="pending, sending, delivered or dead.")] = None,
) -> None:
    """A client's deliveries, oldest first, with their attempts and last error."""
    with control_db() as conn:
        require_client(conn, client_id)
        emit(
            {
                "client_id": client_id,
                "deliveries": hooks.list_deliveries(conn, client_id, state=state),
            }
        )


@hooks_app.command("redeliver")
def hooks_redeliver(delivery_id: int) -> None:
    """Send a delivered or dead event again (its retry window starts over)."""
    with control_db() as conn:
        emit(hooks.redeliver(conn, delivery_id))
