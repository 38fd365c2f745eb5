"""``python -m services.loaders.bigquery``: the BigQuery loader process (metrics on :9105)."""

from __future__ import annotations

from services.loaders.bigquery.loader import BigQueryWarehouse
from services.loaders.bigquery.settings import BigQueryLoaderSettings
from services.loaders.core import process


def main() -> None:
    settings = BigQueryLoaderSettings()
    process.serve(settings, BigQueryWarehouse(settings.request_timeout_s, settings.job_timeout_s))


if __name__ == "__main__":
    main()
