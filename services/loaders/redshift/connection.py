"""Sessions to a client's Redshift: the destination's settings, the address the network policy
vetted, and the limits the loader puts on every session.

redshift-connector resolves the host itself, so the loader hands it the vetted address instead
(the DNS-rebinding window closed, as libpq's ``hostaddr`` closes it for Postgres). It verifies
the server's certificate against the CA bundle without the host name unless ``sslmode`` is
``verify-full``; then the name is kept, and TLS, which a host the name was pointed at cannot
pass, is what holds the line.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

import redshift_connector
from redshift_connector import error as rs
from redshift_connector.core import Connection

from services.loaders.postgres.connection import SessionLimits


def connect(
    config: dict[str, Any],
    secrets: dict[str, str],
    limits: SessionLimits,
    pinned: Mapping[str, str] | None = None,
) -> Connection:
    params = dict(config.get("dsn_params", {}))
    host = str(params.get("host") or "")
    sslmode = str(params.get("sslmode") or "verify-ca")
    address = (pinned or {}).get(host)
    kwargs: dict[str, Any] = {
        "host": host if sslmode == "verify-full" or not address else address,
        "port": int(params.get("port", 5439)),
        "database": params.get("dbname", "dev"),
        "user": params.get("user"),
        "password": secrets.get("password"),
        "timeout": limits.connect_timeout_s,
        "application_name": "skein-loader-redshift",
        "tcp_keepalive": True,
        "tcp_keepalive_idle": limits.keepalive_idle_s,
        "tcp_keepalive_interval": limits.keepalive_interval_s,
        "tcp_keepalive_count": limits.keepalive_count,
    }
    if sslmode == "disable":
        kwargs["ssl"] = False
    else:
        kwargs["sslmode"] = "verify-full" if sslmode == "verify-full" else "verify-ca"
    conn = redshift_connector.connect(**kwargs)
    # The socket's timeout covers every read, not only the connect: a server that stops
    # answering mid-statement ends the statement (keepalives alone notice only a vanished
    # peer). It is the statement limit plus a margin, so a statement the server itself ends
    # (statement_timeout) reports that error first.
    sock = getattr(conn, "_usock", None)
    if sock is not None:
        sock.settimeout(limits.statement_timeout_s + limits.connect_timeout_s)
    # Redshift has no lock_timeout; a statement limit bounds both a slow query and a lock wait.
    conn.autocommit = True
    with contextlib.closing(conn.cursor()) as cur:
        cur.execute(f"SET statement_timeout TO {int(limits.statement_timeout_s * 1000)}")
    conn.autocommit = False
    return conn


def close(conn: Connection) -> None:
    with contextlib.suppress(rs.Error):
        conn.close()
