"""What a Snowflake destination must carry, checked when it is set (no driver import here)."""

from __future__ import annotations

from typing import Any

from cryptography.hazmat.primitives import serialization

REQUIRED = ("account", "user", "database")


def check(config: dict[str, Any], secrets: dict[str, str]) -> None:
    """Raise ValueError naming what is missing or malformed."""
    missing = [k for k in REQUIRED if not config.get(k)]
    if missing:
        raise ValueError(
            f"a snowflake destination needs {', '.join(f'--set {k}=...' for k in missing)}"
        )
    if "password" not in secrets and "private_key" not in secrets:
        raise ValueError(
            "a snowflake destination needs --secret-env password=VAR or private_key=VAR"
        )
    if "private_key" in secrets:
        passphrase = secrets.get("private_key_passphrase")
        try:
            serialization.load_pem_private_key(
                secrets["private_key"].encode(), passphrase.encode() if passphrase else None
            )
        except (ValueError, TypeError) as exc:
            raise ValueError(f"private_key is not a usable PEM private key: {exc}") from None
    if "port" in config and not str(config["port"]).isdigit():
        raise ValueError(f"port must be a number, not {config['port']!r}")
    if config.get("protocol", "https") not in ("http", "https"):
        raise ValueError("protocol must be http or https")
