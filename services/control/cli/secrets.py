"""``skein secrets``: the keyring in SKEIN_SECRET_KEY."""

from __future__ import annotations

import typer

from common.settings import SharedSettings
from services.control import keyring
from services.control.cli.shared import control_db, emit

secrets_app = typer.Typer(no_args_is_help=True, help="The keyring in SKEIN_SECRET_KEY.")


@secrets_app.command("rotate")
def secrets_rotate() -> None:
    """Re-encrypt every destination secret and integration config under the newest key of
    SKEIN_SECRET_KEY, in one transaction (safe to run again: values already under it stay)."""
    keys = SharedSettings().secret_key.get_secret_value()
    with control_db() as conn:
        emit(keyring.rotate_secrets(conn, keys))
