"""``python -m services.loaders.iceberg``: the Iceberg loader process (metrics on :9109)."""

from __future__ import annotations

from services.loaders.core import process
from services.loaders.iceberg.loader import IcebergWarehouse
from services.loaders.iceberg.settings import IcebergLoaderSettings


def main() -> None:
    settings = IcebergLoaderSettings()
    process.serve(
        settings,
        IcebergWarehouse(
            connect_timeout_s=settings.connect_timeout_s,
            request_timeout_s=settings.statement_timeout_s,
            commit_attempts=settings.commit_attempts,
        ),
    )


if __name__ == "__main__":
    main()
