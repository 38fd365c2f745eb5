"""``python -m services.gate``: serve the gate with uvicorn on SKEIN_GATE_HOST:PORT."""

from __future__ import annotations

import uvicorn

from common import logs, metrics
from services.gate.settings import GateSettings


def main() -> None:
    settings = GateSettings()
    logs.configure()
    # Several worker processes share their metrics through this directory (emptied at start).
    metrics.use_multiprocess_dir(settings.metrics_dir, "gate")
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
