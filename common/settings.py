"""Settings from environment variables.

The shared variables (``SKEIN_KAFKA_BOOTSTRAP`` ...) keep their DESIGN.md names in every service;
each service adds its own under ``SKEIN_<SERVICE>_``. A variable under a service's own prefix that
no field of that service's class matches is a configuration error, not silently ignored.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import (
    BaseSettings,
    DotEnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from common import crypto

LOCAL_SECRET_KEY = "skein-local-development-key-change-me"  # noqa: S105 (documented placeholder)
LOCAL_SPOOL_TOKEN = "skein-local-spool-token"  # noqa: S105 (documented placeholder)
LOCAL_S3_SECRET_KEY = "skein-local-secret"  # noqa: S105 (documented placeholder)
# The local stack's demo warehouse, and ports 8790-8799 for hook receivers a developer (or the
# tests) runs on this machine.
LOCAL_ALLOWED_NETWORKS = "127.0.0.1:5433,127.0.0.1:8790-8799"


# The local stack writes its generated secrets (Kafka, Postgres, S3, spool) as SKEIN_* lines to
# this file at the first `make up` (deploy/local/stack.sh); `skein` and the tests read it.
LOCAL_ENV_FILE = Path(__file__).resolve().parents[1] / ".run" / "skein.env"


class ConfigError(ValueError):
    """A setting is missing, misspelt or unsafe."""


def env_file() -> Path | None:
    """The env file settings fall back to (below real environment variables):
    ``SKEIN_ENV_FILE`` when set (empty: none), else the local stack's ``.run/skein.env`` when
    SKEIN_ENV is local and the file exists. The services the stack starts get ``SKEIN_ENV_FILE=``
    and only their own credentials in their environment."""
    named = os.environ.get("SKEIN_ENV_FILE")
    if named is not None:
        return Path(named) if named else None
    if os.environ.get("SKEIN_ENV", "local") == "local" and LOCAL_ENV_FILE.is_file():
        return LOCAL_ENV_FILE
    return None


class SharedSettings(BaseSettings):
    """The variables every service reads, under the names DESIGN.md fixes."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    # The service's own prefix, e.g. "SKEIN_GATE_"; empty for tools that only read shared settings.
    own_prefix: ClassVar[str] = ""
    # The credentials the service uses, which production requires it to be given for real
    # (a service is given only these: the local stack and the Helm chart do so): "kafka" (its
    # own SASL user), "secret_key", "spool_token", "s3_secret_key". Tools read everything.
    credentials: ClassVar[frozenset[str]] = frozenset(
        {"kafka", "secret_key", "spool_token", "s3_secret_key"}
    )

    env: str = Field("local", validation_alias="SKEIN_ENV")
    kafka_bootstrap: str = Field(
        "127.0.0.1:19092,127.0.0.1:29092,127.0.0.1:39092", validation_alias="SKEIN_KAFKA_BOOTSTRAP"
    )
    topic: str = Field("skein.records", validation_alias="SKEIN_TOPIC")
    # SASL/SCRAM-SHA-512 principal of this process on Kafka (docs/architecture.md, Security):
    # gate, streamery or admin. Unset: an anonymous PLAINTEXT client, which the local stack and
    # docker-compose refuse; production requires one.
    kafka_username: str | None = Field(None, validation_alias="SKEIN_KAFKA_USERNAME")
    kafka_password: SecretStr = Field(SecretStr(""), validation_alias="SKEIN_KAFKA_PASSWORD")
    kafka_security_protocol: Literal["SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "SASL_PLAINTEXT", validation_alias="SKEIN_KAFKA_SECURITY_PROTOCOL"
    )
    control_dsn: SecretStr = Field(
        SecretStr("postgresql://postgres@127.0.0.1:5432/skein"),
        validation_alias="SKEIN_CONTROL_DSN",
    )
    s3_endpoint: str = Field("http://127.0.0.1:8333", validation_alias="SKEIN_S3_ENDPOINT")
    s3_bucket: str = Field("skein", validation_alias="SKEIN_S3_BUCKET")
    s3_access_key: str = Field("skein", validation_alias="SKEIN_S3_ACCESS_KEY")
    s3_secret_key: SecretStr = Field(
        SecretStr(LOCAL_S3_SECRET_KEY), validation_alias="SKEIN_S3_SECRET_KEY"
    )
    spool_url: str = Field("http://127.0.0.1:8081", validation_alias="SKEIN_SPOOL_URL")
    # The spool's internal API token (sent as a Bearer token by the streamery and the loaders).
    spool_token: SecretStr = Field(
        SecretStr(LOCAL_SPOOL_TOKEN), validation_alias="SKEIN_SPOOL_TOKEN"
    )
    secret_key: SecretStr = Field(SecretStr(LOCAL_SECRET_KEY), validation_alias="SKEIN_SECRET_KEY")
    # Scrape-time per-client gauges name at most this many clients (the stalest); the rest share
    # the label "other" (docs/architecture.md, Operations).
    metrics_max_clients: int = Field(1000, ge=1, validation_alias="SKEIN_METRICS_MAX_CLIENTS")
    # Non-public networks a destination may point at (common/netpolicy.py). Unset: the demo
    # warehouse of the local stack when SKEIN_ENV=local, nothing otherwise.
    allowed_networks: str | None = Field(
        None, validation_alias="SKEIN_DESTINATION_ALLOWED_NETWORKS"
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The env file is chosen when the settings are read, not when this module is imported.
        found = env_file()
        sources: tuple[PydanticBaseSettingsSource, ...] = (init_settings, env_settings)
        if found is not None:
            sources += (DotEnvSettingsSource(settings_cls, env_file=found),)
        return sources

    def kafka_config(self, **extra: Any) -> dict[str, Any]:
        """librdkafka settings reaching the cluster as this process's principal, plus ``extra``
        (keys with dots spelt with underscores are not translated: pass a dict)."""
        config: dict[str, Any] = {"bootstrap.servers": self.kafka_bootstrap}
        if self.kafka_username:
            config |= {
                "security.protocol": self.kafka_security_protocol,
                "sasl.mechanism": "SCRAM-SHA-512",
                "sasl.username": self.kafka_username,
                "sasl.password": self.kafka_password.get_secret_value(),
            }
        return config | extra

    def kafka_java_properties(self) -> dict[str, str]:
        """The same as Java client properties (Kafka's own tools: benchmarks, the stack)."""
        props = {"bootstrap.servers": self.kafka_bootstrap}
        if self.kafka_username:
            user = self.kafka_username.replace("\\", "\\\\").replace('"', '\\"')
            password = self.kafka_password.get_secret_value()
            password = password.replace("\\", "\\\\").replace('"', '\\"')
            props |= {
                "security.protocol": self.kafka_security_protocol,
                "sasl.mechanism": "SCRAM-SHA-512",
                "sasl.jaas.config": "org.apache.kafka.common.security.scram.ScramLoginModule "
                f'required username="{user}" password="{password}";',
            }
        return props

    @property
    def destination_allowed_networks(self) -> str:
        if self.allowed_networks is not None:
            return self.allowed_networks
        return LOCAL_ALLOWED_NETWORKS if self.env == "local" else ""

    @model_validator(mode="after")
    def _refuse_placeholder_secrets_in_production(self) -> SharedSettings:
        if self.env != "production":
            return self
        for used, name, value, placeholder in (
            ("secret_key", "SKEIN_SECRET_KEY", self.secret_key, LOCAL_SECRET_KEY),
            ("spool_token", "SKEIN_SPOOL_TOKEN", self.spool_token, LOCAL_SPOOL_TOKEN),
            ("s3_secret_key", "SKEIN_S3_SECRET_KEY", self.s3_secret_key, LOCAL_S3_SECRET_KEY),
        ):
            if used in self.credentials and value.get_secret_value() == placeholder:
                raise ConfigError(f"{name} must be set to a real secret when SKEIN_ENV=production")
        problem = crypto.weak_key_problem(self.secret_key.get_secret_value())
        if "secret_key" in self.credentials and problem:
            raise ConfigError(f"{problem} (SKEIN_ENV=production)")
        if "kafka" not in self.credentials:
            return self
        if not self.kafka_username or not self.kafka_password.get_secret_value():
            raise ConfigError(
                "SKEIN_KAFKA_USERNAME and SKEIN_KAFKA_PASSWORD must be set "
                "when SKEIN_ENV=production"
            )
        return self

    @model_validator(mode="before")
    @classmethod
    def _refuse_unknown_own_variables(cls, data: Any) -> Any:
        prefix = cls.own_prefix
        if not prefix:
            return data
        # The service's own fields, plus shared names that happen to start with its prefix
        # (SKEIN_SPOOL_URL and SKEIN_SPOOL_TOKEN for the spool).
        own = {
            f"{prefix}{n}".upper() for n in cls.model_fields if n not in SharedSettings.model_fields
        }
        aliases = {
            f.validation_alias
            for f in cls.model_fields.values()
            if isinstance(f.validation_alias, str)
        }
        known = own | aliases
        unknown = sorted(k for k in os.environ if k.startswith(prefix) and k not in known)
        if unknown:
            raise ConfigError(
                f"unknown setting(s) {', '.join(unknown)}; known under {prefix}: "
                + ", ".join(sorted(k for k in known if k.startswith(prefix)))
            )
        return data
