"""Request bodies: unknown fields and wrong types are refused (422 ``invalid_request``)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from services.control import keys

INT8 = 2**63 - 1


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ClientIn(Body):
    name: str = Field(min_length=1, max_length=200)


class LimitsIn(Body):
    """Each limit: a positive number, or null for the gate's default; absent ones unchanged."""

    rate_limit_rps: int | None = Field(None, ge=1, le=2**31 - 1)
    bytes_per_s: int | None = Field(None, ge=1, le=INT8)
    max_concurrent_requests: int | None = Field(None, ge=1, le=2**31 - 1)
    max_tables: int | None = Field(None, ge=1, le=2**31 - 1)


class WebhookIn(Body):
    table_name: str = Field("data", min_length=1, max_length=255)
    key_field: str | None = Field(None, min_length=1, max_length=255)


class DestinationIn(Body):
    """As ``skein destinations set``: ``dsn`` for postgres/redshift and an iceberg SQL catalog
    (a password in it is moved to the secrets; an iceberg REST catalog takes ``catalog_uri``
    in ``settings`` instead), ``settings`` as ``--set``, ``secrets`` as ``--secret-env`` (stored
    encrypted, never shown again)."""

    type: Literal["postgres", "redshift", "bigquery", "snowflake", "iceberg"]
    dsn: str | None = Field(None, max_length=4096)
    schema_: str | None = Field(None, alias="schema", max_length=255)
    settings: dict[str, str] = Field(default_factory=dict, max_length=64)
    secrets: dict[str, str] = Field(default_factory=dict, max_length=16)


class IntegrationIn(Body):
    """As ``skein integrations add``: the tap is installed and discovered before the answer."""

    name: str = Field(min_length=1, max_length=100)
    tap: str = Field(min_length=1, max_length=300, description="PACKAGE[==VERSION]")
    config: dict[str, Any] = Field(description="The tap's config (stored encrypted).")
    schedule: str = Field("0 * * * *", max_length=200)
    select: list[Annotated[str, Field(max_length=255)]] = Field(
        default_factory=list, max_length=1000
    )
    replication_keys: dict[str, str] = Field(default_factory=dict, max_length=1000)
    secret_keys: list[Annotated[str, Field(max_length=255)]] = Field(
        default_factory=list, max_length=100
    )


GrantKind = Literal["bigquery_project", "redshift_role", "s3_endpoint"]


class GrantIn(Body):
    """One use of the platform's own credentials an operator allows a client."""

    kind: GrantKind
    value: str = Field(min_length=1, max_length=2048)


class PurgeIn(Body):
    older_than_days: float | None = Field(None, gt=0)


class KeyIn(Body):
    client_id: int | None = Field(None, ge=1, le=INT8)  # None: an operator key
    name: str = Field("", max_length=keys.MAX_NAME)


class HookIn(Body):
    """As ``skein hooks create``: the URL, the events it hears, and optionally the signing
    secret (generated and shown once when left out)."""

    url: str = Field(min_length=8, max_length=2000)
    events: list[str] = Field(min_length=1, max_length=20)
    secret: str | None = Field(None, min_length=16, max_length=500)


class ReplayIn(Body):
    """As ``skein replay``: records received in [since, until), of one table or all."""

    since: datetime
    until: datetime | None = None
    table: str | None = Field(None, min_length=1, max_length=1000)
    dry_run: bool = False


class IntegrationSettingsIn(Body):
    """As ``skein integrations set``: a new schedule and/or the streams to replicate (an empty
    list: every stream); absent ones unchanged."""

    schedule: str | None = Field(None, max_length=200)
    select: list[Annotated[str, Field(max_length=255)]] | None = Field(None, max_length=1000)
