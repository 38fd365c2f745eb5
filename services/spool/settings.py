"""The spool's settings: the shared ones plus ``SKEIN_SPOOL_*``."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from common.settings import SharedSettings


class SpoolSettings(SharedSettings):
    """The spool: the queue of batches between the streamery and the loaders, in the control
    database, behind an internal API."""

    model_config = SettingsConfigDict(env_prefix="SKEIN_SPOOL_", extra="ignore")
    own_prefix: ClassVar[str] = "SKEIN_SPOOL_"
    credentials: ClassVar[frozenset[str]] = frozenset({"spool_token", "s3_secret_key"})

    host: str = Field("127.0.0.1", description="spool listen address")
    port: int = Field(8081, description="spool listen port")
    workers: int = Field(2, ge=1, description="spool worker processes")
    metrics_dir: str = Field(
        "",
        description="prometheus multiprocess directory (emptied at start)",
        json_schema_extra={"doc_default": "`.run/metrics/spool` (unset: a temporary directory)"},
    )
    db_pool_size: int = Field(8, ge=1, description="control-DB connections per spool process")
    retry_base_s: float = Field(
        5.0,
        gt=0,
        description="back-off after a transient load failure: base·2^(n-1), capped, jittered",
    )
    retry_cap_s: float = Field(600.0, gt=0, description="... capped at this")
    retry_window_s: float = Field(
        24 * 3600.0,
        gt=0,
        description="transient failures never park a batch (dead) before lasting this long",
    )
    max_lease_seconds: int = Field(3600, ge=1, description="longest lease a loader may ask for")
    max_leases_per_client: int = Field(
        2,
        ge=1,
        description="live leases one client may hold per destination type (its backlog cannot "
        "take every loader worker from the others)",
    )
    housekeeping_interval_s: float = Field(
        1.0,
        gt=0,
        description="how often expired leases return to pending (and late destinations are "
        "resolved)",
    )
    retention_days: float = Field(
        7.0,
        ge=0,
        description="days after its load a batch's S3 object is deleted (0 keeps every object; "
        "dead and skipped batches are never purged); tables idle this long also lose their "
        "lease, high-water and quota rows",
    )
    purge_interval_s: float = Field(300.0, gt=0, description="how often retention runs")
