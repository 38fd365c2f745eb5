"""``python -m services.loaders.snowflake``: the Snowflake loader process (metrics on :9106)."""

from __future__ import annotations

import logging
import signal

from common import health, logs
from services.loaders.core import faults
from services.loaders.core.runner import Destinations, Runner
from services.loaders.snowflake.loader import SnowflakeWarehouse
from services.loaders.snowflake.settings import SnowflakeLoaderSettings

log = logging.getLogger("skein.loader")


def main() -> None:
    settings = SnowflakeLoaderSettings()
    logs.configure()
    faults.configure(settings.fault, settings.fault_marker)
    destinations = Destinations(
        settings.control_dsn.get_secret_value(),
        settings.secret_key.get_secret_value(),
        settings.destination_cache_s,
    )
    runner = Runner(settings, SnowflakeWarehouse(settings.connect_timeout_s), destinations)
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
