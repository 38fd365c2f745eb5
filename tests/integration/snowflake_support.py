"""A fakesnow server process for the Snowflake tests, and reading rows back through the real
connector."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import closing, contextmanager
from typing import Any

import snowflake.connector

from services.loaders.snowflake.statements import q
from tests.conftest import ROOT, wait_for

DATABASE = "SKEIN_TEST"


def free_port() -> int:
    with closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _listening(port: int) -> bool:
    with closing(socket.socket()) as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@contextmanager
def fakesnow_server() -> Iterator[dict[str, Any]]:
    """Start ``tests.support.fakesnow_server`` on a free port; yield a destination config."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.support.fakesnow_server", str(port)], cwd=ROOT
    )
    try:
        wait_for(lambda: _listening(port), timeout=60, what="fakesnow to listen")
        config = {
            "account": "fakesnow",
            "user": "fake",
            "host": "127.0.0.1",
            "port": str(port),
            "protocol": "http",
            "database": DATABASE,
        }
        with closing(connect(config, database=None)) as conn:
            conn.cursor().execute(f"CREATE DATABASE IF NOT EXISTS {q(DATABASE)}")
        yield config
    finally:
        process.terminate()
        process.wait(20)


def connect(config: dict[str, Any], database: str | None = DATABASE) -> Any:
    params = {k: v for k, v in config.items() if k != "database"}
    params["port"] = int(params["port"])
    if database:
        params["database"] = database
    return snowflake.connector.connect(
        **params,
        password="snow",
        paramstyle="qmark",
        network_timeout=30,
        session_parameters={"TIMEZONE": "UTC", "CLIENT_OUT_OF_BAND_TELEMETRY_ENABLED": False},
    )


def select(
    conn: Any, schema: str, table: str, columns: list[str], variants: set[str]
) -> list[dict[str, Any]]:
    """Rows of ``columns``; VARIANT columns (``variants``) parsed from their JSON text."""
    cur = conn.cursor()
    cur.execute(f"SELECT {', '.join(map(q, columns))} FROM {q(schema)}.{q(table)}")
    out = []
    for row in cur.fetchall():
        item = {}
        for name, value in zip(columns, row, strict=True):
            item[name] = json.loads(value) if name in variants and value is not None else value
        out.append(item)
    return out
