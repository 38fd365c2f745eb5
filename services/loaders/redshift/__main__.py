"""``python -m services.loaders.redshift``: the Redshift loader process (metrics on :9104)."""

from __future__ import annotations

import logging
import signal

from common import health, logs
from services.loaders.core import faults
from services.loaders.core.runner import Destinations, Runner
from services.loaders.redshift.loader import RedshiftWarehouse
from services.loaders.redshift.settings import RedshiftLoaderSettings

log = logging.getLogger("skein.loader")


def main() -> None:
    settings = RedshiftLoaderSettings()
    logs.configure()
    faults.configure(settings.fault, settings.fault_marker)
    destinations = Destinations(
        settings.control_dsn.get_secret_value(),
        settings.secret_key.get_secret_value(),
        settings.destination_cache_s,
    )
    runner = Runner(settings, RedshiftWarehouse(settings.connect_timeout_s), destinations)
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
