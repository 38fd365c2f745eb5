"""A BigQuery destination: its typed settings, checked when it is set, and how a loader reads
them (``target_of``; pure, no driver import here).

``skein destinations set CLIENT bigquery --schema DATASET --set project=P [--set location=L]
[--set api_endpoint=URL] [--secret-env credentials_json=VAR]``. Without ``credentials_json`` the
loader uses Application Default Credentials, or none at all when ``api_endpoint`` points at an
emulator.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from pydantic import Field

from services.loaders.core.destination import Model, validated

# Project ids: 6-30 characters of lowercase letters, digits and dashes; older domain-scoped ones
# look like ``example.com:project``. Emulators accept shorter names, so only the alphabet and
# length are checked here; BigQuery itself refuses an unknown project.
_PROJECT = re.compile(r"[a-z0-9][a-z0-9.:-]{0,99}")
_DATASET = re.compile(r"[A-Za-z0-9_]{1,1024}")
_LOCATION = re.compile(r"[A-Za-z0-9-]{1,64}")


GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"  # noqa: S105 (a URL, not a secret)


class DestinationError(ValueError):
    """The destination's settings cannot work; the message says which one and why."""


@dataclass(frozen=True)
class BigQueryTarget:
    project: str
    dataset: str
    location: str | None = None
    api_endpoint: str | None = None
    credentials: dict[str, Any] | None = None  # a service-account (or other) credentials JSON


def target_of(config: dict[str, Any], secrets: dict[str, str], client_id: int) -> BigQueryTarget:
    """Validate and read a destination; raises :class:`DestinationError`. (Unknown keys are
    refused when the destination is set, by ``destination.Settings``; a stored one is ignored.)"""
    project = str(config.get("project") or "")
    if not _PROJECT.fullmatch(project):
        raise DestinationError(
            "a bigquery destination needs --set project=<project id> "
            "(lowercase letters, digits, '-', '.', ':')"
        )
    if config.get("dataset") and config.get("schema") and config["dataset"] != config["schema"]:
        raise DestinationError("give the dataset once (--schema or --set dataset=)")
    dataset = str(config.get("dataset") or config.get("schema") or f"skein_{client_id}")
    if not _DATASET.fullmatch(dataset):
        raise DestinationError(
            f"dataset {dataset!r}: BigQuery allows letters, digits and '_' (1-1024 characters)"
        )
    location = config.get("location")
    if location is not None and not _LOCATION.fullmatch(str(location)):
        raise DestinationError(f"location {location!r} is not a BigQuery location name")
    endpoint = config.get("api_endpoint")
    if endpoint is not None and not re.fullmatch(r"https?://[^\s/]+(/\S*)?", str(endpoint)):
        raise DestinationError(f"api_endpoint {endpoint!r} is not an http(s) URL")
    credentials: dict[str, Any] | None = None
    raw = secrets.get("credentials_json")
    if raw is not None:
        try:
            parsed = json.loads(raw)
        except ValueError:
            raise DestinationError("credentials_json is not JSON") from None
        if not isinstance(parsed, dict) or "type" not in parsed:
            raise DestinationError(
                "credentials_json must be a credentials file's JSON object (with a 'type')"
            )
        # Only a service account's key: other credential types (external_account, ...) make the
        # process that loads them read local files or call URLs they name, which a client must
        # never steer (the platform's own environment holds its secrets).
        if parsed.get("type") != "service_account":
            raise DestinationError(
                "credentials_json must be a service account key (type 'service_account'), "
                f"not {str(parsed.get('type'))[:40]!r}"
            )
        token_uri = parsed.get("token_uri", GOOGLE_TOKEN_URI)
        if token_uri != GOOGLE_TOKEN_URI:
            raise DestinationError(f"credentials_json token_uri must be {GOOGLE_TOKEN_URI}")
        credentials = parsed
    return BigQueryTarget(
        project,
        dataset,
        str(location) if location is not None else None,
        str(endpoint).rstrip("/") if endpoint is not None else None,
        credentials,
    )


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
