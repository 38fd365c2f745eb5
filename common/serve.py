"""Serving a FastAPI service with uvicorn the way every Skein web service runs."""

from __future__ import annotations

from collections.abc import Mapping

import uvicorn

from common import health, logs, metrics


def run(
    service: str,
    factory: str,
    host: str,
    port: int,
    workers: int,
    metrics_dir: str,
    metrics_port: int | None = None,
    probes: Mapping[str, health.Probe] | None = None,
) -> None:
    """``factory`` is "module:function" returning the app. Several worker processes share their
    Prometheus metrics through ``metrics_dir`` (emptied at start). uvicorn's access log is off:
    the services log requests themselves, by route template (webhook URLs hold tokens).

    With ``metrics_port``, ``/metrics`` (all workers' aggregated), ``/healthz`` and ``/readyz``
    are also served by the supervising process on that internal port, apart from the public
    one (the gate's public port then has no ``/metrics``); ``/readyz`` asks ``probes``."""
    logs.configure()
    metrics.use_multiprocess_dir(metrics_dir, service)
    if metrics_port is not None:
        health.serve(host, metrics_port, probes or {})
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
