"""``python -m services.loaders.postgres``: the Postgres loader process (metrics on :9103)."""

from __future__ import annotations

from services.loaders.core import process
from services.loaders.postgres.connection import SessionLimits
from services.loaders.postgres.loader import PostgresWarehouse
from services.loaders.postgres.settings import PostgresLoaderSettings


def main() -> None:
    settings = PostgresLoaderSettings()
    limits = SessionLimits(
        connect_timeout_s=settings.connect_timeout_s,
        statement_timeout_s=settings.statement_timeout_s,
        lock_timeout_s=settings.lock_timeout_s,
    )
    process.serve(settings, PostgresWarehouse(limits))


if __name__ == "__main__":
    main()
