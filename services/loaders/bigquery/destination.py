"""What a BigQuery destination must carry, checked when it is set (no driver import here)."""

from __future__ import annotations

from typing import Any

from services.loaders.bigquery.config import target_of


def check(config: dict[str, Any], secrets: dict[str, str]) -> None:
    """Raise ValueError (``DestinationError``) naming the setting that cannot work: the project,
    the dataset (``--schema``), the location, ``api_endpoint`` or ``credentials_json``."""
    target_of(config, secrets, 0)
