"""A Postgres destination's typed settings, checked when it is set (no driver import here)."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from services.loaders.core.destination import DsnParams, Model, validated


class Settings(Model):
    dsn_params: DsnParams
    schema_: str | None = Field(None, alias="schema", min_length=1)


class Secrets(Model):
    password: str | None = None


def check(config: dict[str, Any], secrets: dict[str, str]) -> None:
    """Raise ValueError naming what is missing or malformed (libpq defaults the rest)."""
    if not isinstance(config.get("dsn_params"), dict) or not config["dsn_params"].get("host"):
        raise ValueError("a postgres destination needs a host in --dsn")
    validated(Settings, config, "setting")
    validated(Secrets, secrets, "secret")
