"""``skein schema`` and ``skein rejected``: what loads changed besides rows."""

from __future__ import annotations

from typing import Annotated

import typer

from services.control import loadlog
from services.control.cli.replay import moment
from services.control.cli.shared import control_db, emit, require_client

schema_app = typer.Typer(no_args_is_help=True, help="The schema changes loads made.")
rejected_app = typer.Typer(no_args_is_help=True, help="Records loads rejected, with reasons.")
Table = Annotated[str | None, typer.Option(help="Only this table.")]


@schema_app.command("log")
def schema_log(client_id: int, table: Table = None) -> None:
    """Every schema change a loader made for the client (table created, column added, widened
    or split): table, change, type before and after, batches."""
    with control_db() as conn:
        require_client(conn, client_id)
        emit({"client_id": client_id, "changes": loadlog.schema_log(conn, client_id, table=table)})


@rejected_app.command("ls")
def rejected_ls(
    client_id: int,
    table: Table = None,
    since: Annotated[
        str | None,
        typer.Option(metavar="TS", help="Only rejections at or after this ISO 8601 time."),
    ] = None,
) -> None:
    """Rejected records with their reasons (up to 100 a load are kept, for the retention; the
    destination's `_sdc_rejected` table has all)."""
    with control_db() as conn:
        require_client(conn, client_id)
        after = moment(since, "--since") if since else None
        emit(
            {
                "client_id": client_id,
                "rejected": loadlog.rejected(conn, client_id, table=table, since=after),
            }
        )
