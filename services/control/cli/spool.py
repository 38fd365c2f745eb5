"""``skein spool``: batches waiting to load. Operators act on the control database directly:
this works even when the spool is down."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Annotated

import typer

from common import control
from services.control.cli.shared import connected, emit, fail

spool_app = typer.Typer(no_args_is_help=True, help="Batches waiting to load (the spool).")


def spool_db() -> AbstractContextManager[control.Connection]:
    from services.spool import operations, queue

    return connected(queue.Conflict, operations.NotFound)


@spool_app.command("ls")
def spool_ls(
    state: Annotated[
        str | None, typer.Option(help="pending|leased|retry_wait|loaded|dead|skipped")
    ] = None,
    client: Annotated[int | None, typer.Option("--client", help="Only this client's.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many.")] = 1000,
) -> None:
    """List batches in load order."""
    from services.spool import operations, queue

    if state is not None and state not in queue.STATES:
        fail(f"unknown state {state!r}; one of {', '.join(queue.STATES)}")
    with spool_db() as conn:
        emit({"batches": operations.list_batches(conn, state=state, client_id=client, limit=limit)})


@spool_app.command("stats")
def spool_stats() -> None:
    """Open batches by destination type and state (and by client), with bytes and the oldest
    waiting record's age; live leases."""
    from services.spool import operations

    with spool_db() as conn:
        emit(operations.stats(conn))


@spool_app.command("retry")
def spool_retry(
    batch_id: Annotated[int | None, typer.Argument()] = None,
    all_dead: Annotated[bool, typer.Option("--all-dead", help="Every dead batch.")] = False,
) -> None:
    """Put a dead batch (or every dead batch) back to pending."""
    from services.spool import operations

    if (batch_id is None) == (not all_dead):
        fail("give a batch id or --all-dead")
    with spool_db() as conn:
        emit({"retried": operations.retry(conn, batch_id)})


@spool_app.command("skip")
def spool_skip(batch_id: int) -> None:
    """Give up on a dead batch so its table's later batches can load."""
    from services.spool import operations

    with spool_db() as conn:
        emit({"skipped": operations.skip(conn, batch_id)})


@spool_app.command("purge")
def spool_purge(
    older_than_days: Annotated[
        float | None,
        typer.Option(help="loaded at least this long ago (default SKEIN_SPOOL_RETENTION_DAYS)"),
    ] = None,
) -> None:
    """Delete the S3 objects of batches loaded longer ago than the retention; rows stay, marked
    purged. Dead and skipped batches are never touched."""
    from services.spool import operations
    from services.spool.objects import BatchObjects
    from services.spool.settings import SpoolSettings

    settings = SpoolSettings()
    days = settings.retention_days if older_than_days is None else older_than_days
    if days <= 0:
        fail("retention is off (0 days): nothing is purged")
    objects = BatchObjects(settings)
    purged = 0
    with spool_db() as conn:
        while done := operations.purge_loaded(conn, days * 86400, objects.delete):
            purged += done
    emit({"purged": purged, "older_than_days": days})
