"""Serving a FastAPI service with uvicorn the way every Skein web service runs."""

from __future__ import annotations

import uvicorn

from common import logs, metrics


def run(service: str, factory: str, host: str, port: int, workers: int, metrics_dir: str) -> None:
    """``factory`` is "module:function" returning the app. Several worker processes share their
    Prometheus metrics through ``metrics_dir`` (emptied at start). uvicorn's access log is off:
    the services log requests themselves, by route template (webhook URLs hold tokens)."""
    logs.configure()
    metrics.use_multiprocess_dir(metrics_dir, service)
    uvicorn.run(
        factory,
        factory=True,
        host=host,
        port=port,
        workers=workers,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_config=None,
        server_header=False,
        timeout_graceful_shutdown=30,
    )
