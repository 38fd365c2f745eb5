"""Settings every loader has, under its own prefix ``SKEIN_LOADER_<TYPE>_``."""

from __future__ import annotations

from pydantic import Field

from common.settings import SharedSettings

MB = 1024 * 1024


class LoaderSettings(SharedSettings):
    host: str = "127.0.0.1"
    metrics_port: int = 9103
    workers: int = Field(2, ge=1)
    # Extended every third while a load runs; a crashed loader's tables wait at most this long.
    lease_seconds: int = Field(60, ge=10)
    max_batches: int = Field(20, ge=1)
    max_bytes: int = Field(32 * MB, ge=1)
    poll_interval_s: float = Field(0.5, gt=0)
    connect_timeout_s: int = Field(10, ge=1)
    destination_cache_s: float = Field(30.0, ge=0)
    # Crash tests only: die at this point ("before_commit" | "after_commit"), once per marker.
    fault: str = ""
    fault_marker: str = ""
