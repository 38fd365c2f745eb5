"""A Snowflake destination's typed settings, checked when it is set (no driver import here)."""

from __future__ import annotations

from typing import Any, Literal

from cryptography.hazmat.primitives import serialization
from pydantic import Field

from services.loaders.core.destination import Model, NonEmpty, Port, validated

REQUIRED = ("account", "user", "database")


class Settings(Model):
    """What ``snowflake.connector.connect`` is given (``connection.CONNECT_SETTINGS``), and the
    schema to load into."""

    account: NonEmpty
    user: NonEmpty
    database: NonEmpty
    warehouse: str | None = None
    role: str | None = None
    host: str | None = None
    port: Port | None = None
    protocol: Literal["http", "https"] = "https"
    schema_: str | None = Field(None, alias="schema", min_length=1)


class Secrets(Model):
    password: str | None = None
    private_key: str | None = None
    private_key_passphrase: str | None = None


def check(config: dict[str, Any], secrets: dict[str, str]) -> None:
    """Raise ValueError naming what is missing or malformed."""
    missing = [k for k in REQUIRED if not config.get(k)]
    if missing:
        raise ValueError(
            f"a snowflake destination needs {', '.join(f'--set {k}=...' for k in missing)}"
        )
    validated(Settings, config, "setting")
    sealed = validated(Secrets, secrets, "secret")
    if sealed.password is None and sealed.private_key is None:
        raise ValueError(
            "a snowflake destination needs --secret-env password=VAR or private_key=VAR"
        )
    if sealed.private_key is not None:
        passphrase = sealed.private_key_passphrase
        try:
            serialization.load_pem_private_key(
                sealed.private_key.encode(), passphrase.encode() if passphrase else None
            )
        except (ValueError, TypeError) as exc:
            raise ValueError(f"private_key is not a usable PEM private key: {exc}") from None
