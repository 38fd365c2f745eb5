"""``python -m services.loaders.redshift``: the Redshift loader process (metrics on :9104)."""

from __future__ import annotations

from services.loaders.core import process
from services.loaders.redshift.loader import RedshiftWarehouse
from services.loaders.redshift.settings import RedshiftLoaderSettings


def main() -> None:
    settings = RedshiftLoaderSettings()
    process.serve(
        settings, RedshiftWarehouse(settings.connect_timeout_s, settings.statement_timeout_s)
    )


if __name__ == "__main__":
    main()
