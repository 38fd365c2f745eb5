"""``skein db``: the control database's migrations."""

from __future__ import annotations

from contextlib import closing

import typer

from common import db
from common import migrate as migrations
from services.control.cli.shared import emit, fail

db_app = typer.Typer(no_args_is_help=True, help="Control database.")


@db_app.command("migrate")
def db_migrate() -> None:
    """Apply the control database's pending SQL migrations, in order, once each."""
    with closing(db.connect()) as conn:
        try:
            applied = migrations.migrate(conn)
        except migrations.MigrationError as exc:
            fail(str(exc))
    emit({"applied": [f"{m.version:04d}_{m.name}" for m in applied]})


@db_app.command("status")
def db_status() -> None:
    """List migrations and whether each is applied."""
    with closing(db.connect()) as conn:
        rows = migrations.status(conn)
    emit({"migrations": [{"version": v, "name": n, "applied": a} for v, n, a in rows]})
