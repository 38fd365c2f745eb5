"""``skein replay``: load a client's retained batches again."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer

from common import control
from services.control.cli.shared import control_db, emit
from services.spool import replay as replays


def moment(text: str, option: str) -> datetime:
    """An ISO 8601 time; one without a zone is UTC."""
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise control.ControlError(f"{option} {text!r} is not an ISO 8601 time") from None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def replay(
    client_id: int,
    since: Annotated[
        str,
        typer.Option(
            metavar="TS", help="Records received at or after this ISO 8601 time (UTC if no zone)."
        ),
    ],
    until: Annotated[
        str | None, typer.Option(metavar="TS", help="... and before this time.")
    ] = None,
    table: Annotated[str | None, typer.Option(help="Only this table.")] = None,
    dry_run: Annotated[
        bool, typer.Option(help="Say what would be enqueued; change nothing.")
    ] = False,
) -> None:
    """Load again the client's batches whose records arrived in the window, from their
    retained objects, in order, into its current destination; rows converge (keys by sequence,
    appends by their deterministic key). `gone` lists the ranges already purged."""
    with control_db() as conn:
        emit(
            replays.replay(
                conn,
                client_id,
                since=moment(since, "--since"),
                until=moment(until, "--until") if until else None,
                table=table,
                dry_run=dry_run,
            )
        )
