"""``python -m services.spool``: serve the spool's internal API on SKEIN_SPOOL_HOST:PORT."""

from __future__ import annotations

import uvicorn

from common import logs, metrics
from services.spool.settings import SpoolSettings


def main() -> None:
    settings = SpoolSettings()
    logs.configure()
    metrics.use_multiprocess_dir(settings.metrics_dir, "spool")
    uvicorn.run(
        "services.spool.app:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_config=None,
        server_header=False,
        timeout_graceful_shutdown=20,
    )


if __name__ == "__main__":
    main()
