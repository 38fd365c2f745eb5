"""A fakesnow server process for the Snowflake tests, and reading rows back through the real
connector."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import closing, contextmanager
from typing import Any

import snowflake.connector

from services.loaders.snowflake.statements import q
from support.processes import stop_process
from support.stack import ROOT, free_port, listening, wait_for

DATABASE = "SKEIN_TEST"


@contextmanager
def fakesnow_server() -> Iterator[dict[str, Any]]:
    """Start ``support.fakesnow_server`` on a free port; yield a destination config."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "support.fakesnow_server", str(port)], cwd=ROOT
    )
    try:
        wait_for(lambda: listening(port), timeout=60, what="fakesnow to listen")
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
        stop_process(process, 20)


def connect(
    config: dict[str, Any], database: str | None = DATABASE, network_timeout: int = 30
) -> Any:
    params = {k: v for k, v in config.items() if k != "database"}
    params["port"] = int(params["port"])
    if database:
        params["database"] = database
    return snowflake.connector.connect(
        **params,
        password="snow",
        paramstyle="qmark",
        network_timeout=network_timeout,
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
