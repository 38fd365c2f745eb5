"""The local stack (``deploy/local/stack.sh``) as tests and benchmarks see it: where it keeps its
runtime files, its endpoints and generated secrets, starting and stopping its parts, scratch
databases on its control cluster, and polling for a condition with a deadline.

Importing this module points libpq at the stack's generated passwords (``PGPASSFILE``, unless it
is set already), so that ``common.db.connect()`` and ``psycopg2.connect`` reach its clusters.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import httpx
import psycopg2
from psycopg2 import sql

ROOT = Path(__file__).resolve().parent.parent
STACK = ROOT / "deploy" / "local" / "stack.sh"
RUN_DIR = Path(os.environ.get("SKEIN_RUN_DIR", ROOT / ".run"))
PIDS = RUN_DIR / "pids"
GATE = "http://127.0.0.1:8080"

T = TypeVar("T")


def use_stack_passwords() -> None:
    """``PGPASSFILE`` set to the libpq password file `make up` writes, unless already set."""
    if (RUN_DIR / "secrets" / "pgpass").is_file():
        os.environ.setdefault("PGPASSFILE", str(RUN_DIR / "secrets" / "pgpass"))


use_stack_passwords()


def stack_secret(name: str) -> str:
    """A secret the local stack generated at its first `make up` (.run/secrets/NAME)."""
    return (RUN_DIR / "secrets" / name).read_text().strip()


def demo_warehouse_secrets(dsn_params: dict[str, str] | None = None) -> dict[str, str]:
    """The secrets of a destination as the superuser of the demo warehouse (or, when
    ``dsn_params`` names port 5432, of the control cluster: some tests use a database there as
    a second warehouse server)."""
    port = str((dsn_params or {}).get("port", "5433"))
    return {"password": stack_secret("pg-control" if port == "5432" else "pg-warehouse")}


def stack(*args: str, timeout: float = 180) -> str:
    """Run ``deploy/local/stack.sh`` with ``args``; return its stdout, fail on a non-zero exit."""
    done = subprocess.run(
        [str(STACK), *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, f"stack.sh {' '.join(args)} failed:\n{done.stderr}"
    return done.stdout


@contextmanager
def scaled(instances: int) -> Iterator[None]:
    """The running stack at ``instances`` of every Skein service for the duration, then at 1
    (``stack.sh scale``; 1 changes nothing)."""
    if instances > 1:
        stack("scale", str(instances), timeout=300)
    try:
        yield
    finally:
        if instances > 1:
            stack("scale", "1", timeout=300)


@contextmanager
def scratch_database(name: str) -> Iterator[str]:
    """Database ``name`` on the control cluster, created afresh (one an earlier run left behind
    is dropped first) and dropped afterwards, whatever happens: its URL, as the superuser."""
    admin = psycopg2.connect("postgresql://postgres@127.0.0.1:5432/postgres")  # PGPASSFILE
    admin.autocommit = True
    drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
    try:
        with admin.cursor() as cur:
            cur.execute(drop)
            cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        with admin.cursor() as cur:
            cur.execute(drop)
        admin.close()


def service_pid(name: str) -> int:
    """The pid of a process stack.sh started (its session leader: the pid is its group)."""
    return int((PIDS / f"{name}.pid").read_text().split()[0])


def wait_for(
    probe: Callable[[], T], *, timeout: float, interval: float = 0.25, what: str = "condition"
) -> T:
    """Poll ``probe`` until it returns a truthy value; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: T = probe()
    while not last:
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})"
            )
        time.sleep(interval)
        last = probe()
    return last


def healthy(url: str) -> bool:
    """Whether ``url`` answers 200 now (a refused or dropped connection is a no)."""
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def listening(port: int) -> bool:
    """Whether something accepts connections on loopback ``port`` now."""
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def free_port() -> int:
    """A loopback port nothing listens on right now (bound and released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
