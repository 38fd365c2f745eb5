"""Shared fixtures: the local stack's endpoints and helpers to poll for conditions."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

ROOT = Path(__file__).resolve().parent.parent
STACK = ROOT / "deploy" / "local" / "stack.sh"
RUN_DIR = Path(os.environ.get("SKEIN_RUN_DIR", ROOT / ".run"))

T = TypeVar("T")

# The test suite's fakes (fakesnow, the BigQuery emulator, hanging listeners, a second warehouse
# database on the control cluster) listen on loopback ports: destinations set, and loaders
# started, by the tests may reach any of them. The platform's own addresses (the control
# database, Kafka, S3, the spool) stay refused whatever this says; the network-policy tests
# build their own policies. (`make up`'s services keep the local default, 127.0.0.1:5433.)
os.environ.setdefault("SKEIN_DESTINATION_ALLOWED_NETWORKS", "127.0.0.0/8")
# The tests' own connections to the stack's Postgres clusters find their generated passwords
# here (a libpq password file `make up` writes). Destinations store theirs: demo_warehouse_secrets.
if (RUN_DIR / "secrets" / "pgpass").is_file():
    os.environ.setdefault("PGPASSFILE", str(RUN_DIR / "secrets" / "pgpass"))


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


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """BigQuery emulator and Helm tests last: on a machine without them cached, `.ci/run` builds
    both in the background (~12 min and ~3 min cold) while every other suite runs."""
    items.sort(key=lambda item: "bigquery" in item.nodeid or "test_helm" in item.nodeid)
