"""``python -m services.loaders.postgres``: the Postgres loader process (metrics on :9103)."""

from __future__ import annotations

from services.loaders.core import process
from services.loaders.postgres.loader import PostgresWarehouse
from services.loaders.postgres.settings import PostgresLoaderSettings


def main() -> None:
    settings = PostgresLoaderSettings()
    process.serve(settings, PostgresWarehouse(settings.connect_timeout_s))


if __name__ == "__main__":
    main()
