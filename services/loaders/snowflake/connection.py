"""Sessions to a client's Snowflake account: the destination's settings and key, and the limits
the loader puts on every session.

The connector speaks HTTPS to the account's host and resolves it itself, on every new pooled
connection, so it cannot be pinned to the address the network policy vetted. TLS is what holds
the line: a host the name was pointed at cannot present the account's certificate, and the
connector sends nothing before the handshake. ``protocol=http`` (a local stand-in) has no such
guard, so the network policy allows it only to networks an operator listed
(``SKEIN_DESTINATION_ALLOWED_NETWORKS``).
"""

from __future__ import annotations

import contextlib
from typing import Any

import snowflake.connector
from cryptography.hazmat.primitives import serialization
from snowflake.connector import SnowflakeConnection
from snowflake.connector import errors as sf

from services.loaders.snowflake.destination import Settings

# What of a destination's settings (destination.Settings) goes to connect().
CONNECT_SETTINGS = tuple(name for name in Settings.model_fields if name != "schema_")


def connect(
    config: dict[str, Any],
    secrets: dict[str, str],
    timeout: int,
    statement_timeout_s: float = 300.0,
) -> SnowflakeConnection:
    """A session whose login takes at most ``timeout`` seconds and whose statements at most
    ``statement_timeout_s`` (the server's ``STATEMENT_TIMEOUT_IN_SECONDS`` ends them; every
    request to the account also gives up a little after that, for a server that never
    answers)."""
    params: dict[str, Any] = {k: config[k] for k in CONNECT_SETTINGS if config.get(k)}
    if "port" in params:
        params["port"] = int(params["port"])
    if "password" in secrets:
        params["password"] = secrets["password"]
    if "private_key" in secrets:
        passphrase = secrets.get("private_key_passphrase")
        key = serialization.load_pem_private_key(
            secrets["private_key"].encode(), passphrase.encode() if passphrase else None
        )
        params["private_key"] = key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    return snowflake.connector.connect(
        **params,
        paramstyle="qmark",  # values bound by the server, never interpolated into SQL
        login_timeout=timeout,
        network_timeout=int(statement_timeout_s) + 60,
        application="skein-loader-snowflake",
        session_parameters={
            "TIMEZONE": "UTC",
            "CLIENT_OUT_OF_BAND_TELEMETRY_ENABLED": False,
            "STATEMENT_TIMEOUT_IN_SECONDS": int(statement_timeout_s),
        },
    )


def close(conn: SnowflakeConnection) -> None:
    with contextlib.suppress(sf.Error):
        conn.close()
