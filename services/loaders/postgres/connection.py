"""Sessions to a client's Postgres (and, through ``connection_params``' limits, Redshift):
which libpq parameters a destination may set, and the limits the loader puts on every session.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Any

import psycopg2
import psycopg2.extensions

from common import destination_config

Connection = psycopg2.extensions.connection


@dataclass(frozen=True)
class SessionLimits:
    """What bounds one warehouse session, so that a hung server, a held lock or a slow trigger
    costs its own client a timeout instead of a loader thread for ever."""

    connect_timeout_s: int = 10
    statement_timeout_s: float = 300.0
    lock_timeout_s: float = 30.0
    # TCP keepalives (and the kernel's user timeout) notice a peer that vanished mid-statement.
    keepalive_idle_s: int = 30
    keepalive_interval_s: int = 10
    keepalive_count: int = 3


def connection_params(
    config: dict[str, Any],
    secrets: dict[str, str],
    limits: SessionLimits,
    application: str,
    pinned: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """libpq parameters for a destination: only its allowed settings (``LIBPQ_ALLOWED``: a
    stored ``options`` or ``service`` from before that rule is dropped here), the address the
    network policy vetted for its host (``hostaddr``: libpq connects there and does not resolve
    the name again; ``host`` still names the server for TLS), then the loader's limits, which a
    destination cannot lift."""
    params: dict[str, Any] = {
        k: v
        for k, v in config.get("dsn_params", {}).items()
        if k in destination_config.LIBPQ_ALLOWED
    }
    address = (pinned or {}).get(str(params.get("host") or ""))
    if address:
        params["hostaddr"] = address
    if "password" in secrets:
        params["password"] = secrets["password"]
    asked = int(params.get("connect_timeout") or limits.connect_timeout_s)
    params["connect_timeout"] = max(1, min(asked, limits.connect_timeout_s))
    statement_ms = int(limits.statement_timeout_s * 1000)
    params.update(
        application_name=application,
        keepalives=1,
        keepalives_idle=limits.keepalive_idle_s,
        keepalives_interval=limits.keepalive_interval_s,
        keepalives_count=limits.keepalive_count,
        tcp_user_timeout=(
            limits.keepalive_idle_s + limits.keepalive_interval_s * limits.keepalive_count
        )
        * 1000,
        options=(
            f"-c statement_timeout={statement_ms} "
            f"-c lock_timeout={int(limits.lock_timeout_s * 1000)} "
            f"-c idle_in_transaction_session_timeout={statement_ms}"
        ),
    )
    return params


def identity(config: dict[str, Any], secrets: dict[str, str]) -> Hashable:
    """What a session is opened with: every stored libpq setting it uses, and a digest of the
    password (two destinations with the same identity get interchangeable sessions)."""
    params = sorted(
        (k, str(v))
        for k, v in config.get("dsn_params", {}).items()
        if k in destination_config.LIBPQ_ALLOWED
    )
    password = hashlib.sha256(secrets.get("password", "").encode()).hexdigest()
    return ("postgres", tuple(params), password)


def connect(
    config: dict[str, Any],
    secrets: dict[str, str],
    limits: SessionLimits | None = None,
    pinned: Mapping[str, str] | None = None,
) -> Connection:
    params = connection_params(
        config, secrets, limits or SessionLimits(), "skein-loader-postgres", pinned
    )
    conn: Connection = psycopg2.connect(**params)
    return conn


def close(conn: Connection, wait_s: float = 2.0) -> None:
    """Close a session and wait (up to ``wait_s``) until the server has let it go.

    libpq's close sends Terminate and returns at once; the server's backend leaves
    ``pg_stat_activity`` a moment later, and closes its end of the socket only after that. So a
    duplicate of the socket is read to its end: once it is, the session no longer counts
    against the server's ``max_connections``, and a replacement opened next never stands
    beside it.
    """
    try:
        fd = os.dup(conn.fileno())
    except (OSError, psycopg2.Error):
        fd = -1
    with contextlib.suppress(psycopg2.Error):
        conn.close()
    if fd < 0:
        return
    with socket.socket(fileno=fd) as sock, contextlib.suppress(OSError):
        sock.settimeout(wait_s)
        while sock.recv(65536):
            pass
