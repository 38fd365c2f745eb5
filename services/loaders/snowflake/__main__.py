"""``python -m services.loaders.snowflake``: the Snowflake loader process (metrics on :9106)."""

from __future__ import annotations

from services.loaders.core import process
from services.loaders.snowflake.loader import SnowflakeWarehouse
from services.loaders.snowflake.settings import SnowflakeLoaderSettings


def main() -> None:
    settings = SnowflakeLoaderSettings()
    process.serve(
        settings, SnowflakeWarehouse(settings.connect_timeout_s, settings.statement_timeout_s)
    )


if __name__ == "__main__":
    main()
