"""The spool's settings: the shared ones plus ``SKEIN_SPOOL_*``."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from common.settings import SharedSettings


class SpoolSettings(SharedSettings):
    model_config = SettingsConfigDict(env_prefix="SKEIN_SPOOL_", extra="ignore")
    own_prefix: ClassVar[str] = "SKEIN_SPOOL_"
    credentials: ClassVar[frozenset[str]] = frozenset({"spool_token", "s3_secret_key"})

    host: str = "127.0.0.1"
    port: int = 8081
    workers: int = Field(2, ge=1)
    metrics_dir: str = ""
    db_pool_size: int = Field(8, ge=1)
    retry_base_s: float = Field(5.0, gt=0)
    retry_cap_s: float = Field(600.0, gt=0)
    # Transient failures never park a batch before they have lasted this long.
    retry_window_s: float = Field(24 * 3600.0, gt=0)
    max_lease_seconds: int = Field(3600, ge=1)
    # Live leases one client may hold per destination type: its backlog cannot take every
    # loader worker from the others.
    max_leases_per_client: int = Field(2, ge=1)
    # Expired leases return to pending, and late destinations are resolved, this often.
    housekeeping_interval_s: float = Field(1.0, gt=0)
    # Retention: a loaded batch's S3 object is deleted this many days after its load (0 keeps
    # every object); the check runs this often. Dead and skipped batches are never purged.
    retention_days: float = Field(7.0, ge=0)
    purge_interval_s: float = Field(300.0, gt=0)
