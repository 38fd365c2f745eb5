"""Settings from environment variables.

The shared variables (``SKEIN_KAFKA_BOOTSTRAP`` ...) keep their DESIGN.md names in every service;
each service adds its own under ``SKEIN_<SERVICE>_``. A variable under a service's own prefix that
no field of that service's class matches is a configuration error, not silently ignored.
"""

from __future__ import annotations

import os
from typing import Any, ClassVar

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

LOCAL_SECRET_KEY = "skein-local-development-key-change-me"  # noqa: S105 (documented placeholder)


class ConfigError(ValueError):
    """A setting is missing, misspelt or unsafe."""


class SharedSettings(BaseSettings):
    """The variables every service reads, under the names DESIGN.md fixes."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    # The service's own prefix, e.g. "SKEIN_GATE_"; empty for tools that only read shared settings.
    own_prefix: ClassVar[str] = ""

    env: str = Field("local", validation_alias="SKEIN_ENV")
    kafka_bootstrap: str = Field(
        "127.0.0.1:19092,127.0.0.1:29092,127.0.0.1:39092", validation_alias="SKEIN_KAFKA_BOOTSTRAP"
    )
    topic: str = Field("skein.records", validation_alias="SKEIN_TOPIC")
    control_dsn: SecretStr = Field(
        SecretStr("postgresql://postgres@127.0.0.1:5432/skein"),
        validation_alias="SKEIN_CONTROL_DSN",
    )
    s3_endpoint: str = Field("http://127.0.0.1:8333", validation_alias="SKEIN_S3_ENDPOINT")
    s3_bucket: str = Field("skein", validation_alias="SKEIN_S3_BUCKET")
    s3_access_key: str = Field("skein", validation_alias="SKEIN_S3_ACCESS_KEY")
    s3_secret_key: SecretStr = Field(
        SecretStr("skein-local-secret"), validation_alias="SKEIN_S3_SECRET_KEY"
    )
    spool_url: str = Field("http://127.0.0.1:8081", validation_alias="SKEIN_SPOOL_URL")
    secret_key: SecretStr = Field(SecretStr(LOCAL_SECRET_KEY), validation_alias="SKEIN_SECRET_KEY")

    @model_validator(mode="after")
    def _refuse_placeholder_secret_in_production(self) -> SharedSettings:
        if self.env == "production" and self.secret_key.get_secret_value() == LOCAL_SECRET_KEY:
            raise ConfigError(
                "SKEIN_SECRET_KEY must be set to a real secret when SKEIN_ENV=production"
            )
        return self

    @model_validator(mode="before")
    @classmethod
    def _refuse_unknown_own_variables(cls, data: Any) -> Any:
        prefix = cls.own_prefix
        if not prefix:
            return data
        known = {f"{prefix}{name}".upper() for name in cls.model_fields}
        unknown = sorted(k for k in os.environ if k.startswith(prefix) and k not in known)
        if unknown:
            raise ConfigError(
                f"unknown setting(s) {', '.join(unknown)}; known under {prefix}: "
                + ", ".join(sorted(known))
            )
        return data
