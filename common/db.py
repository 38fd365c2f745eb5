"""Control-database connections."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import psycopg2
import psycopg2.extensions
import psycopg2.pool

from common.settings import SharedSettings

T = TypeVar("T")


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


class ControlDb:
    """A small pool of control-database connections used from worker threads."""

    def __init__(self, dsn: str, size: int = 4, name: str = "skein") -> None:
        self._dsn = dsn
        self._size = size
        self._name = name
        self._pool: psycopg2.pool.ThreadedConnectionPool | None = None
        self._pool_lock = threading.Lock()  # two first callers must not make two pools
        # Callers wait for a free connection instead of failing with "pool exhausted".
        self._slots = threading.BoundedSemaphore(size)

    def _get_pool(self) -> psycopg2.pool.ThreadedConnectionPool:
        with self._pool_lock:
            if self._pool is None:
                # minconn = maxconn: psycopg2 closes any returned connection beyond minconn,
                # which would mean a new connection (~5 ms) per call.
                self._pool = psycopg2.pool.ThreadedConnectionPool(
                    self._size,
                    self._size,
                    self._dsn,
                    connect_timeout=3,
                    application_name=self._name,
                )
            return self._pool

    def run(self, fn: Callable[[Any], T], timeout: float = 5.0) -> T:
        if not self._slots.acquire(timeout=timeout):
            raise TimeoutError("no control-database connection free")
        try:
            pool = self._get_pool()
            conn = pool.getconn()
            broken = False
            try:
                return fn(conn)
            except psycopg2.Error:
                broken = True
                raise
            finally:
                pool.putconn(conn, close=broken or bool(conn.closed))
        finally:
            self._slots.release()

    def ping(self) -> bool:
        try:
            return self.run(_select_one)
        except Exception:
            return False

    def close(self) -> None:
        if self._pool is not None:
            self._pool.closeall()


def _select_one(conn: Any) -> bool:
    with conn, conn.cursor() as cur:
        cur.execute("SELECT 1")
        return bool(cur.fetchone())
