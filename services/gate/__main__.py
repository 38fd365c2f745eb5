"""``python -m services.gate``: serve the gate with uvicorn on SKEIN_GATE_HOST:PORT."""

from __future__ import annotations

from common import serve
from services.gate.settings import GateSettings


def main() -> None:
    s = GateSettings()
    serve.run(
        "gate",
        "services.gate.app:create_app",
        s.host,
        s.port,
        s.workers,
        s.metrics_dir,
        metrics_port=s.metrics_port,
    )


if __name__ == "__main__":
    main()
