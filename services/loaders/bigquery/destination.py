"""A BigQuery destination's typed settings, checked when it is set (no driver import here)."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from services.loaders.bigquery.config import target_of
from services.loaders.core.destination import Model, validated


class Settings(Model):
    """``project`` without per-client credentials only where an operator allowed it for the
    client (the platform's grants); ``dataset`` and ``schema`` name the same thing."""

    project: str | None = None  # required; target_of explains the rule when it is missing
    dataset: str | None = None
    schema_: str | None = Field(None, alias="schema")
    location: str | None = None
    api_endpoint: str | None = None  # an emulator's URL


class Secrets(Model):
    credentials_json: str | None = None


def check(config: dict[str, Any], secrets: dict[str, str]) -> None:
    """Raise ValueError (``DestinationError``) naming the setting that cannot work: an unknown
    one, the project, the dataset (``--schema``), the location, ``api_endpoint`` or
    ``credentials_json``."""
    validated(Settings, config, "bigquery setting")
    validated(Secrets, secrets, "bigquery secret")
    target_of(config, secrets, 0)
