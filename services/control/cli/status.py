"""``skein status``: freshness and health per client and table."""

from __future__ import annotations

from contextlib import closing
from typing import Annotated

import typer

from common import db
from services.control.cli.shared import emit
from services.spool import status as table_status


def status(
    client: Annotated[int | None, typer.Option("--client", help="Only this client.")] = None,
    objective: Annotated[
        float, typer.Option(min=1, help="Freshness objective in seconds.")
    ] = table_status.FRESHNESS_OBJECTIVE_S,
) -> None:
    """Per client and table: last load, its freshness, the oldest unloaded record's age,
    pending and dead batches, last error. Exit code 1 when a table has dead batches or records
    waiting longer than the freshness objective."""
    with closing(db.connect()) as conn:
        found = table_status.report(table_status.tables(conn, client), objective)
    emit(found)
    if not found["healthy"]:
        raise typer.Exit(1)
