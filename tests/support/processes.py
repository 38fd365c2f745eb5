"""A Skein service started by a test with its own settings (the stack's one stopped meanwhile
when it would compete), stopped at the end whatever happens."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import httpx

from tests.conftest import ROOT, RUN_DIR, stack, wait_for


def _healthy(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@contextmanager
def own_service(
    module: str, env: dict[str, str], health_url: str, *, replaces: str | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """``python -m services.<module>`` with ``env`` over this process's environment, healthy at
    ``health_url``; ``replaces`` names a stack service stopped meanwhile (and started again)."""
    if replaces is not None:
        stack("stop", replaces)
    log = open(RUN_DIR / "logs" / f"{module}-test.log", "ab")  # noqa: SIM115
    process = subprocess.Popen(
        [sys.executable, "-m", f"services.{module}"],
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=log,
        stderr=log,
    )
    log.close()
    try:
        wait_for(lambda: _healthy(health_url), timeout=60, what=f"the test's {module}")
        yield process
    finally:
        process.terminate()
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if replaces is not None:
            stack("start", replaces)
