"""``python -m services.loaders.bigquery``: the BigQuery loader process (metrics on :9105)."""

from __future__ import annotations

import logging
import signal

from common import health, logs
from services.loaders.bigquery.loader import BigQueryWarehouse
from services.loaders.bigquery.settings import BigQueryLoaderSettings
from services.loaders.core import faults
from services.loaders.core.runner import Destinations, Runner

log = logging.getLogger("skein.loader")


def main() -> None:
    settings = BigQueryLoaderSettings()
    logs.configure()
    faults.configure(settings.fault, settings.fault_marker)
    destinations = Destinations(
        settings.control_dsn.get_secret_value(),
        settings.secret_key.get_secret_value(),
        settings.destination_cache_s,
    )
    warehouse = BigQueryWarehouse(settings.request_timeout_s, settings.job_timeout_s)
    runner = Runner(settings, warehouse, destinations)
    server = health.serve(settings.host, settings.metrics_port, {})

    def stop(signum: int, _frame: object) -> None:
        log.info("stopping: finishing the loads in progress", extra={"signal": signum})
        runner.stop.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    runner.start()
    runner.join()
    server.shutdown()
    log.info("loader stopped")


if __name__ == "__main__":
    main()
