from __future__ import annotations

from typing import ClassVar

from pydantic_settings import SettingsConfigDict

from services.loaders.core.settings import LoaderSettings


class SnowflakeLoaderSettings(LoaderSettings):
    model_config = SettingsConfigDict(env_prefix="SKEIN_LOADER_SNOWFLAKE_", extra="ignore")
    own_prefix: ClassVar[str] = "SKEIN_LOADER_SNOWFLAKE_"

    metrics_port: int = 9106
