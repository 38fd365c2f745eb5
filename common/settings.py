"""Settings from environment variables.

The shared variables (``SKEIN_KAFKA_BOOTSTRAP`` ...) keep the same names in every service;
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
    """The variables every service reads, under the same names in every service."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    # The service's own prefix, e.g. "SKEIN_GATE_"; empty for tools that only read shared settings.
    own_prefix: ClassVar[str] = ""
    # The credentials the service uses, which production requires it to be given for real
    # (a service is given only these: the local stack and the Helm chart do so): "kafka" (its
    # own SASL user), "secret_key", "spool_token", "s3_secret_key". Tools read everything.
    credentials: ClassVar[frozenset[str]] = frozenset(
        {"kafka", "secret_key", "spool_token", "s3_secret_key"}
    )

    env: str = Field(
        "local",
        validation_alias="SKEIN_ENV",
        description="`production` refuses a placeholder `SKEIN_SECRET_KEY`, `SKEIN_SPOOL_TOKEN` "
        "or `SKEIN_S3_SECRET_KEY` and requires Kafka credentials (each service: of those it "
        "uses)",
    )
    kafka_bootstrap: str = Field(
        "127.0.0.1:19092,127.0.0.1:29092,127.0.0.1:39092",
        validation_alias="SKEIN_KAFKA_BOOTSTRAP",
        description="Kafka bootstrap servers",
    )
    topic: str = Field(
        "skein.records", validation_alias="SKEIN_TOPIC", description="the records topic"
    )
    # Principals and the ACLs they get: docs/architecture.md, Security.
    kafka_username: str | None = Field(
        None,
        validation_alias="SKEIN_KAFKA_USERNAME",
        description="this process's SASL/SCRAM-SHA-512 principal; unset = anonymous, which the "
        "brokers (local stack, docker-compose) refuse; required in production",
        json_schema_extra={
            "doc_default": "unset (`admin` in `.run/skein.env`; `gate`, `streamery` for those "
            "services)"
        },
    )
    kafka_password: SecretStr = Field(
        SecretStr(""),
        validation_alias="SKEIN_KAFKA_PASSWORD",
        description="its password",
        json_schema_extra={"doc_default": "from `.run/secrets/kafka-<principal>`"},
    )
    kafka_security_protocol: Literal["SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "SASL_PLAINTEXT",
        validation_alias="SKEIN_KAFKA_SECURITY_PROTOCOL",
        description="`SASL_SSL` for brokers with TLS",
    )
    control_dsn: SecretStr = Field(
        SecretStr("postgresql://postgres@127.0.0.1:5432/skein"),
        validation_alias="SKEIN_CONTROL_DSN",
        description="control database",
        json_schema_extra={
            "doc_default": "`postgresql://postgres:<.run/secrets/pg-control>@127.0.0.1:5432/skein`"
        },
    )
    s3_endpoint: str = Field(
        "http://127.0.0.1:8333", validation_alias="SKEIN_S3_ENDPOINT", description="S3 API endpoint"
    )
    s3_bucket: str = Field(
        "skein", validation_alias="SKEIN_S3_BUCKET", description="bucket for batch objects"
    )
    s3_access_key: str = Field(
        "skein", validation_alias="SKEIN_S3_ACCESS_KEY", description="S3 access key"
    )
    s3_secret_key: SecretStr = Field(
        SecretStr(LOCAL_S3_SECRET_KEY),
        validation_alias="SKEIN_S3_SECRET_KEY",
        description="S3 secret key",
        json_schema_extra={
            "doc_default": "`.run/secrets/s3` (built-in placeholder refused in production)"
        },
    )
    spool_url: str = Field(
        "http://127.0.0.1:8081",
        validation_alias="SKEIN_SPOOL_URL",
        description="the spool's internal API",
    )
    spool_token: SecretStr = Field(
        SecretStr(LOCAL_SPOOL_TOKEN),
        validation_alias="SKEIN_SPOOL_TOKEN",
        description="bearer token of the spool's internal API (the streamery and the loaders "
        "send it)",
        json_schema_extra={
            "doc_default": "`.run/secrets/spool-token` (built-in placeholder refused in production)"
        },
    )
    secret_key: SecretStr = Field(
        SecretStr(LOCAL_SECRET_KEY),
        validation_alias="SKEIN_SECRET_KEY",
        description="keyring `ID:KEY[,ID:KEY...]` of base64 32-byte keys; the last encrypts "
        "destination secrets, hook secrets and integration configs (AES-GCM, bound to the "
        "client), all decrypt; `skein secrets rotate` moves everything to the last (a "
        "passphrase is refused in production)",
        json_schema_extra={"doc_default": "a placeholder passphrase"},
    )
    # docs/architecture.md, Operations.
    metrics_max_clients: int = Field(
        1000,
        ge=1,
        validation_alias="SKEIN_METRICS_MAX_CLIENTS",
        description="clients named by the scrape-time per-client gauges (the stalest); the rest "
        "are labelled `other`",
    )
    # Checked by common/netpolicy.py.
    allowed_networks: str | None = Field(
        None,
        validation_alias="SKEIN_DESTINATION_ALLOWED_NETWORKS",
        description="non-public `NETWORK[:PORT[-PORT]]` ranges a destination or a hook URL may "
        "point at (comma-separated); the platform's own addresses are refused whatever it says",
        json_schema_extra={
            "doc_default": f"`{LOCAL_ALLOWED_NETWORKS}` with `SKEIN_ENV=local` (the demo "
            "warehouse, local hook receivers), else empty"
        },
    )

    platform_s3_buckets: str = Field(
        "",
        validation_alias="SKEIN_DESTINATION_PLATFORM_S3_BUCKETS",
        description="buckets of the platform's own S3 (`SKEIN_S3_ENDPOINT`) an Iceberg "
        "destination's warehouse location may use (comma-separated); every other bucket there "
        "stays refused, and `SKEIN_S3_BUCKET` (the batch objects) can never be one",
        json_schema_extra={"doc_default": "empty (`lake` on the local stack)"},
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
    def destination_platform_s3_buckets(self) -> frozenset[str]:
        return frozenset(b.strip() for b in self.platform_s3_buckets.split(",") if b.strip())

    @property
    def destination_allowed_networks(self) -> str:
        if self.allowed_networks is not None:
            return self.allowed_networks
        return LOCAL_ALLOWED_NETWORKS if self.env == "local" else ""

    @model_validator(mode="after")
    def _refuse_the_batch_bucket_to_destinations(self) -> SharedSettings:
        if self.s3_bucket in self.destination_platform_s3_buckets:
            raise ConfigError(
                f"SKEIN_DESTINATION_PLATFORM_S3_BUCKETS names {self.s3_bucket!r}, the platform's "
                "batch bucket (SKEIN_S3_BUCKET): a destination can never write there"
            )
        return self

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
