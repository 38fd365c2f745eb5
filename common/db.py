"""Control-database connections."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg2
import psycopg2.extensions

from common.settings import SharedSettings


def connect(dsn: str | None = None, *, connect_timeout: int = 5) -> psycopg2.extensions.connection:
    """Open a connection to the control database (``SKEIN_CONTROL_DSN`` unless ``dsn`` is given)."""
    if dsn is None:
        dsn = SharedSettings().control_dsn.get_secret_value()
    return psycopg2.connect(dsn, connect_timeout=connect_timeout, application_name="skein")


@contextmanager
def transaction(
    conn: psycopg2.extensions.connection,
) -> Iterator[psycopg2.extensions.cursor]:
    """A cursor inside one transaction: committed on success, rolled back on any error."""
    with conn, conn.cursor() as cur:
        yield cur
