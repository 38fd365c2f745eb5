"""``python -m services.spool``: serve the spool's internal API on SKEIN_SPOOL_HOST:PORT."""

from __future__ import annotations

from common import serve
from services.spool.settings import SpoolSettings


def main() -> None:
    s = SpoolSettings()
    serve.run("spool", "services.spool.app:create_app", s.host, s.port, s.workers, s.metrics_dir)


if __name__ == "__main__":
    main()
