"""``python -m services.extractor``: the scheduler process (metrics on 127.0.0.1:9107).

``python -m services.extractor --once`` runs every due integration once and exits: the
entry point of a Kubernetes CronJob (deploy/kubernetes/extractor-cronjob.yaml).
"""

from __future__ import annotations

import logging
import signal
import sys
from contextlib import closing

import httpx
from prometheus_client import REGISTRY

from common import db, health, logs
from services.extractor import metrics, runs
from services.extractor.scheduler import Scheduler
from services.extractor.settings import ExtractorSettings

log = logging.getLogger("skein.extractor")


def main(argv: list[str]) -> int:
    settings = ExtractorSettings()
    logs.configure(settings.log_level)
    dsn = settings.control_dsn.get_secret_value()
    scheduler = Scheduler(settings)
    if argv[1:] == ["--once"]:
        scheduler.run_due_once()
        return 0
    if argv[1:]:
        sys.stderr.write("usage: python -m services.extractor [--once]\n")
        return 2

    def rows() -> list[metrics.Row]:
        with closing(db.connect(dsn, connect_timeout=2)) as conn:
            return runs.health(conn)

    def control_db_up() -> bool:
        with closing(db.connect(dsn, connect_timeout=2)) as conn, conn.cursor() as cur:
            cur.execute("SELECT 1")
            return True

    def gate_up() -> bool:
        status = f"{settings.gate_url.rstrip('/')}/v2/import/status"
        return httpx.get(status, timeout=2.0).status_code == 200

    REGISTRY.register(metrics.IntegrationHealth(rows))
    server = health.serve(
        settings.host, settings.metrics_port, {"control_db": control_db_up, "gate": gate_up}
    )

    def stop(signum: int, _frame: object) -> None:
        log.info("stopping: ending the runs in progress", extra={"signal": signum})
        scheduler.stop.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("extractor started", extra={"taps_dir": settings.taps_dir, "gate": settings.gate_url})
    scheduler.serve()
    server.shutdown()
    log.info("extractor stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
