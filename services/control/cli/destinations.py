"""``skein destinations``: each client's warehouse."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer

from common import control
from common.settings import SharedSettings
from services.control import destinations
from services.control.cli.shared import control_db, emit, from_env, pairs, require_client
from services.loaders import registry

destinations_app = typer.Typer(no_args_is_help=True, help="Each client's warehouse.")


# The registry's types, as the CLI's choices.
DestinationType = StrEnum("DestinationType", {name: name for name in registry.TYPES})  # type: ignore[misc]


@destinations_app.command("set")
def destinations_set(
    client_id: int,
    destination_type: Annotated[DestinationType, typer.Argument(metavar="TYPE")],
    dsn: Annotated[
        str | None, typer.Option(help="postgres/redshift: libpq URL or key=value string.")
    ] = None,
    schema: Annotated[str | None, typer.Option(help="Schema (dataset) to load into.")] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Non-secret KEY=VALUE setting; repeatable.")
    ] = None,
    password_env: Annotated[
        str | None, typer.Option(help="Read the password from this environment variable.")
    ] = None,
    password_prompt: Annotated[
        bool, typer.Option("--password-prompt", help="Ask for the password.")
    ] = False,
    secret_env: Annotated[
        list[str] | None,
        typer.Option(help="Secret KEY=VAR read from environment variable VAR; repeatable."),
    ] = None,
) -> None:
    """Create or replace a client's destination; secrets are stored encrypted."""
    with control_db() as conn:
        require_client(conn, client_id)
        if password_env is not None and password_prompt:
            raise control.ControlError("give either --password-env or --password-prompt")
        password = from_env(password_env) if password_env is not None else None
        if (
            dsn is not None
            and destinations.split_dsn(dsn)[1] is not None
            and (SharedSettings().env == "production")
        ):
            # argv is visible to every local user (ps, /proc) and kept in shell history.
            raise control.ControlError(
                "a password on the command line is refused in production: give it with "
                "--password-env or --password-prompt"
            )
        if password_prompt:
            # The prompt goes to stderr: stdout carries only the JSON answer.
            password = str(typer.prompt("Password", hide_input=True, err=True))
        config, secrets = destinations.settings_of(
            destination_type.value,
            dsn=dsn,
            schema=schema,
            settings=pairs(set_ or [], "--set"),
            password=password,
            secrets={k: from_env(v) for k, v in pairs(secret_env or [], "--secret-env").items()},
        )
        emit(
            destinations.put(
                conn, SharedSettings(), client_id, destination_type.value, config, secrets
            )
        )


@destinations_app.command("test")
def destinations_test(client_id: int) -> None:
    """Connect to the client's destination as its loader would (network policy, credentials,
    a round trip) and report, as JSON; exit 1 when it cannot be reached."""
    with control_db() as conn:
        require_client(conn, client_id)
        report = destinations.test(conn, SharedSettings(), client_id)
    emit(report)
    if not report["ok"]:
        raise typer.Exit(1)


@destinations_app.command("show")
def destinations_show(client_id: int) -> None:
    """A client's destination: settings and the names of its secrets, never their values."""
    with control_db() as conn:
        require_client(conn, client_id)
        emit(destinations.show(conn, SharedSettings(), client_id))
