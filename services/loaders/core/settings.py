"""Settings every loader has, under its own prefix ``SKEIN_LOADER_<TYPE>_``."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, model_validator

from common.settings import SharedSettings

MB = 1024 * 1024


class LoaderSettings(SharedSettings):
    credentials: ClassVar[frozenset[str]] = frozenset(
        {"secret_key", "spool_token", "s3_secret_key"}
    )
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
    # The tenant boundary (docs/architecture.md, "Loaders: many clients on one server"):
    # warehouse sessions held by this process in all, least recently used closed first ...
    max_connections: int = Field(16, ge=1)
    # ... and closed after this long idle.
    idle_connection_s: float = Field(60.0, gt=0)
    # A load past this is given up (cancelled, nacked as transient; its lease is not renewed).
    max_load_s: float = Field(900.0, gt=0)
    # A load running this long frees its worker slot for other clients' work (it goes on
    # beside them); at most max_stalled_loads do so at once.
    stalled_load_s: float = Field(10.0, gt=0)
    max_stalled_loads: int = Field(4, ge=0)
    # Postgres/Redshift session limits: one statement, one lock wait.
    statement_timeout_s: float = Field(300.0, gt=0)
    lock_timeout_s: float = Field(30.0, gt=0)
    # Crash tests only: die at this point ("before_commit" | "after_commit"), once per marker.
    fault: str = ""
    fault_marker: str = ""

    @model_validator(mode="after")
    def _threads_fit_the_connections(self) -> LoaderSettings:
        # Each loading thread holds one session: more threads than sessions could wait forever.
        threads = self.workers + self.max_stalled_loads
        if threads > self.max_connections:
            raise ValueError(
                f"workers ({self.workers}) + max_stalled_loads ({self.max_stalled_loads}) must "
                f"not exceed max_connections ({self.max_connections})"
            )
        return self
