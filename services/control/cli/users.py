"""``skein users``: users of the web console (an operator, or one client's)."""

from __future__ import annotations

from typing import Annotated

import typer

from services.control import users
from services.control.cli.shared import control_db, emit, fail, from_env

users_app = typer.Typer(no_args_is_help=True, help="Users of the web console.")


@users_app.command("create")
def users_create(
    name: str,
    password_env: Annotated[
        str, typer.Option("--password-env", help="The environment variable holding the password.")
    ],
    operator: Annotated[
        bool, typer.Option("--operator", help="An operator: sees and runs every client.")
    ] = False,
    client: Annotated[
        int | None, typer.Option("--client", help="A user of this client only.")
    ] = None,
) -> None:
    """Create a console user (`{"user_id", "name", "role", "client_id"}`); the password (12 to
    1,024 characters) is read from an environment variable, never from the command line, and
    stored as an argon2id hash."""
    if operator == (client is not None):
        fail("give either --operator or --client CLIENT_ID")
    with control_db() as conn:
        emit(users.create(conn, name, client, from_env(password_env)))


@users_app.command("list")
def users_list() -> None:
    """Console users and their roles; never a password or its hash."""
    with control_db() as conn:
        emit({"users": users.listed(conn)})


@users_app.command("remove")
def users_remove(name: str) -> None:
    """Remove a console user: their sessions end at once."""
    with control_db() as conn:
        emit({"name": name, "removed": users.remove(conn, name)})
