"""The life of a loader process, the same for every warehouse type: configure logging and fault
injection, serve /metrics, run the lease loop until SIGTERM/SIGINT, then finish the loads in
progress. Each ``python -m services.loaders.<type>`` builds its settings and warehouse and calls
``serve``."""

from __future__ import annotations

import logging
import signal

from common import health, logs, runtime
from services.loaders.core import faults
from services.loaders.core.destination_cache import Destinations
from services.loaders.core.protocol import SessionT, Warehouse
from services.loaders.core.runner import Runner
from services.loaders.core.settings import LoaderSettings

log = logging.getLogger("skein.loader")


def serve(settings: LoaderSettings, warehouse: Warehouse[SessionT]) -> None:
    logs.configure()
    runtime.quick_gil_handoff()
    faults.configure(settings.fault, settings.fault_marker)
    destinations = Destinations(
        settings.control_dsn.get_secret_value(),
        settings.secret_key.get_secret_value(),
        settings.destination_cache_s,
    )
    runner = Runner(settings, warehouse, destinations)
    server = health.serve(settings.host, settings.metrics_port, {})
    runtime.tune_gc()

    def stop(signum: int, _frame: object) -> None:
        log.info("stopping: finishing the loads in progress", extra={"signal": signum})
        runner.stop.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    runner.start()
    runner.join()
    server.shutdown()
    log.info("loader stopped")
