from __future__ import annotations

from typing import ClassVar

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from services.loaders.core.settings import LoaderSettings


class IcebergLoaderSettings(LoaderSettings):
    model_config = SettingsConfigDict(env_prefix="SKEIN_LOADER_ICEBERG_", extra="ignore")
    own_prefix: ClassVar[str] = "SKEIN_LOADER_ICEBERG_"

    metrics_port: int = 9109
    commit_attempts: int = Field(
        5,
        ge=1,
        description="a commit that lost a race to another writer is tried again this many "
        "times in all (the table re-read, the lease's batch ids looked for in its snapshots, "
        "the lease applied anew), then the load fails as transient",
    )
