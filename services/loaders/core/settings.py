"""Settings every loader has, under its own prefix ``SKEIN_LOADER_<TYPE>_``."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, model_validator

from common.settings import SharedSettings

MB = 1024 * 1024


class LoaderSettings(SharedSettings):
    """Settings every loader has (spool to each client's warehouse), each under its own
    prefix."""

    credentials: ClassVar[frozenset[str]] = frozenset(
        {"secret_key", "spool_token", "s3_secret_key"}
    )
    host: str = Field(
        "127.0.0.1", description="listen address of its `/metrics`, `/healthz`, `/readyz`"
    )
    metrics_port: int = Field(9103, description="its `/metrics`, `/healthz`, `/readyz` port")
    # A load waits on the warehouse most of its time: 4 overlap those waits on 2 cores (a
    # trickle of 100 records/s over 20 tables: p99 202-to-row 1.6 s with 2, 0.8 s with 4).
    workers: int = Field(4, ge=1, description="concurrent loads (threads)")
    lease_seconds: int = Field(
        60,
        ge=10,
        description="lease length asked of the spool (extended every third while loading); a "
        "crashed loader's tables wait at most this long",
    )
    max_batches: int = Field(
        20, ge=1, description="most batches in one lease (a table's are loaded in one transaction)"
    )
    max_bytes: int = Field(
        32 * MB,
        ge=1,
        description="most bytes in one lease (a table's are loaded in one transaction)",
    )
    # With many small tables, each lease, ack and the spool's ranking behind them cost about
    # as much as a small load: several tables of the client share them.
    max_tables: int = Field(
        8,
        ge=1,
        le=100,
        description="most tables of one client in one lease (loaded one after another, each in "
        "its own transaction; max_batches and max_bytes bound the whole lease)",
    )
    poll_interval_s: float = Field(0.2, gt=0, description="wait when the spool has no work")
    connect_timeout_s: int = Field(
        10, ge=1, description="warehouse connection timeout (Postgres, Redshift, Snowflake)"
    )
    destination_cache_s: float = Field(
        30.0, ge=0, description="how long a client's destination settings are cached"
    )
    # The tenant boundary (docs/architecture.md, "Loaders: many clients on one server").
    max_connections: int = Field(
        16,
        ge=1,
        description="warehouse sessions this loader process holds in all, least recently used "
        "closed first (must be ≥ `WORKERS` + `MAX_STALLED_LOADS`)",
    )
    idle_connection_s: float = Field(
        60.0, gt=0, description="an idle warehouse session is closed after this"
    )
    max_load_s: float = Field(
        900.0,
        gt=0,
        description="a load past this is cancelled and fails as transient (its lease is no "
        "longer extended)",
    )
    # It goes on beside the other clients' work.
    stalled_load_s: float = Field(
        10.0,
        gt=0,
        description="a load running this long gives its worker slot to other clients' work",
    )
    max_stalled_loads: int = Field(
        4, ge=0, description="at most this many loads give up their slot at once"
    )
    statement_timeout_s: float = Field(
        300.0,
        gt=0,
        description="per-session `statement_timeout` (Redshift too; Snowflake: "
        "`STATEMENT_TIMEOUT_IN_SECONDS`; BigQuery has its own `..._REQUEST_TIMEOUT_S` and "
        "`..._JOB_TIMEOUT_S`)",
    )
    lock_timeout_s: float = Field(
        30.0, gt=0, description="per-session `lock_timeout` (Postgres only)"
    )
    native_plans: bool = Field(
        True,
        description="run compiled record plans natively where skein_loader_native is installed "
        "(Postgres); false: Python's plans, each line read",
    )
    fault: str = Field(
        "",
        description="crash tests only: SIGKILL once at `before_commit` or `after_commit`",
    )
    fault_marker: str = Field(
        "",
        description="crash tests only: a file that makes the fault fire once, even across restarts",
    )

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
