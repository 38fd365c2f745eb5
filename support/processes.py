"""Processes a test or benchmark starts itself: a Skein service with its own settings (the
stack's one stopped meanwhile when it would compete), stopped at the end whatever happens; a
loader made to die at a fault point, for the crash tests."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from support.stack import ROOT, RUN_DIR, healthy, stack, wait_for


def stop_process(process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    """SIGTERM ``process`` (unless it exited), wait ``timeout`` for it, then SIGKILL it."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


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
        wait_for(lambda: healthy(health_url), timeout=60, what=f"the test's {module}")
        yield process
    finally:
        stop_process(process)
        if replaces is not None:
            stack("start", replaces)


@contextmanager
def loader_dying_at(
    warehouse: str, point: str, marker: Path, metrics_port: int
) -> Iterator[subprocess.Popen[bytes]]:
    """The ``warehouse`` loader in place of the stack's, made to SIGKILL itself once at
    ``point`` (services/loaders/core/faults.py; it leaves ``marker`` behind as it does), with one
    worker and a 12 s lease so that the batch it held is leased again soon after it dies. On
    the way out it is killed if it still runs, and the stack's loader started again."""
    service = f"loaders.{warehouse}"
    setting = f"SKEIN_LOADER_{warehouse.upper()}_"
    env = {
        **os.environ,
        f"{setting}FAULT": point,
        f"{setting}FAULT_MARKER": str(marker),
        f"{setting}METRICS_PORT": str(metrics_port),
        f"{setting}WORKERS": "1",
        f"{setting}LEASE_SECONDS": "12",
    }
    stack("stop", service)
    log = open(RUN_DIR / "logs" / f"loader-{warehouse}-fault-{point}.log", "ab")  # noqa: SIM115
    process = subprocess.Popen(
        [sys.executable, "-m", f"services.{service}"], cwd=ROOT, env=env, stdout=log, stderr=log
    )
    log.close()
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        stack("start", service)
