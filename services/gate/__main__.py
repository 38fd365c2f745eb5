"""``python -m services.gate``: serve the gate with uvicorn on SKEIN_GATE_HOST:PORT."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import uvicorn

from common import logs
from services.gate.settings import GateSettings


def main() -> None:
    settings = GateSettings()
    logs.configure()
    # Several worker processes share their metrics through this directory (emptied at start).
    metrics_dir = Path(settings.metrics_dir or tempfile.mkdtemp(prefix="skein-gate-metrics-"))
    shutil.rmtree(metrics_dir, ignore_errors=True)
    metrics_dir.mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    uvicorn.run(
        "services.gate.app:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_config=None,
        server_header=False,
        timeout_graceful_shutdown=30,
    )


if __name__ == "__main__":
    main()
