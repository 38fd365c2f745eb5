"""What a Postgres destination must carry, checked when it is set (no driver import here)."""

from __future__ import annotations

from typing import Any


def check(config: dict[str, Any], secrets: dict[str, str]) -> None:
    """Raise ValueError naming what is missing or malformed (libpq defaults the rest)."""
    dsn = config.get("dsn_params") or {}
    if not isinstance(dsn, dict) or not dsn.get("host"):
        raise ValueError("a postgres destination needs a host in --dsn")
    if "port" in dsn and not str(dsn["port"]).isdigit():
        raise ValueError(f"port must be a number, not {dsn['port']!r}")
