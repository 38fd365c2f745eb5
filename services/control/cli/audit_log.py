"""``skein audit``: who changed what in the control plane."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import typer

from common import audit, control
from services.control.cli.shared import control_db, emit

audit_app = typer.Typer(no_args_is_help=True, help="Who changed what in the control plane.")


@audit_app.command("ls")
def audit_ls(
    client: Annotated[int | None, typer.Option(help="Only this client's changes.")] = None,
    since: Annotated[
        str | None, typer.Option(metavar="TS", help="Only changes at or after this ISO 8601 time.")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=100_000, help="At most this many.")] = 1000,
) -> None:
    """Control-plane changes, newest first: when, who (`os:<user>`, `key:<key_id>`), what
    (`client.create`, `token.revoke`, `destination.set`, `client.set_limits`, `client.allow`,
    `integration.add`, ...), on which client; never a secret value."""
    with control_db() as conn:
        try:
            after = datetime.fromisoformat(since) if since else None
        except ValueError:
            raise control.ControlError(f"--since {since!r} is not an ISO 8601 time") from None
        emit({"entries": audit.entries(conn, client_id=client, since=after, limit=limit)})
