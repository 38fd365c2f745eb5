"""``python -m services.control``: the control service's HTTP API on SKEIN_CONTROL_HOST:PORT,
its /metrics, /healthz and /readyz on SKEIN_CONTROL_METRICS_PORT."""

from __future__ import annotations

from common import serve
from common.db import ControlDb
from services.control.settings import ControlSettings


def main() -> None:
    s = ControlSettings()
    db = ControlDb(s.control_dsn.get_secret_value(), size=1, name="skein-control-health")
    serve.run(
        "control",
        "services.control.api:create_app",
        s.host,
        s.port,
        s.workers,
        s.metrics_dir,
        metrics_port=s.metrics_port,
        probes={"control_db": db.ping},
    )


if __name__ == "__main__":
    main()
