from __future__ import annotations

from typing import ClassVar

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from services.loaders.core.settings import LoaderSettings


class BigQueryLoaderSettings(LoaderSettings):
    model_config = SettingsConfigDict(env_prefix="SKEIN_LOADER_BIGQUERY_", extra="ignore")
    own_prefix: ClassVar[str] = "SKEIN_LOADER_BIGQUERY_"

    metrics_port: int = 9105
    request_timeout_s: float = Field(
        30.0,
        gt=0,
        description="one BigQuery API call (the client library's own retries stay within 3x "
        "this; the spool's back-off retries the load)",
    )
    job_timeout_s: float = Field(600.0, gt=0, description="longest wait for one load or query job")
