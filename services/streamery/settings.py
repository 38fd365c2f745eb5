"""The streamery's settings: the shared ones plus ``SKEIN_STREAMERY_*``."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from common import kafka_admin
from common.settings import SharedSettings

MiB = 1024 * 1024


class StreamerySettings(SharedSettings):
    """The streamery: Kafka to per-table gzip JSONL batches in S3, registered with the spool,
    offsets committed after."""

    model_config = SettingsConfigDict(env_prefix="SKEIN_STREAMERY_", extra="ignore")
    own_prefix: ClassVar[str] = "SKEIN_STREAMERY_"
    credentials: ClassVar[frozenset[str]] = frozenset({"kafka", "spool_token", "s3_secret_key"})

    metrics_host: str = Field(
        "127.0.0.1",
        description="listen address of the streamery's `/metrics`, `/healthz`, `/readyz`",
    )
    metrics_port: int = Field(9102, ge=0, le=65535, description="... and their port")
    group_id: str = Field(
        kafka_admin.STREAMERY_GROUP,
        description="Kafka consumer group (all streamery processes share it)",
    )
    # librdkafka's 45 s default would stall those partitions that long after a SIGKILL.
    session_timeout_ms: int = Field(
        10_000,
        ge=6_000,
        le=300_000,
        description="a crashed member's partitions move to the others after this long without "
        "heartbeats",
    )
    # Everything the process may hold in record data: table buffers, batches on their way to S3
    # and the spool, librdkafka's fetch queue (a fixed share of this, fetch_queue_bytes), and the
    # allocator's slack (an eighth: see data_budget).
    memory_limit_bytes: int = Field(
        512 * MiB,
        ge=32 * MiB,
        description="record data held at most: buffers + batches in flight + librdkafka's queue",
    )
    fetch_queue_bytes: int = Field(
        0,
        ge=0,
        description="the limit's share reserved for librdkafka's pre-fetch queue; 0 = an eighth "
        "of the limit, at most 64 MiB",
    )
    # Cut policy: a table's buffer becomes a batch at the first of these limits.
    max_batch_bytes: int = Field(
        32 * MiB,
        ge=64 * 1024,
        description="cut a table's buffer before it passes this (a larger message is a batch "
        "alone)",
    )
    max_batch_records: int = Field(
        500_000, ge=1, description="cut a table's buffer at this many records"
    )
    # Freshness: p99 gate-to-row <= 15 s.
    max_batch_age_s: float = Field(
        5.0,
        gt=0,
        description="cut a table's buffer this long after its first record arrived",
    )
    # docs/architecture.md, "Cutting".
    batch_quiet_s: float = Field(
        0.25,
        ge=0,
        description="cut a table's buffer once it has had no new record for this long (0 = "
        "never): freshness follows the load",
    )
    batch_fresh_age_s: float = Field(
        0.5,
        ge=0,
        description="cut a table's buffer once its first record waited this long, while few "
        "tables are open (0 = never): sub-second freshness at a trickle",
    )
    batch_fresh_cuts_per_s: float = Field(
        100.0,
        gt=0,
        description="... such early cuts paced to this many a second in all: with more open "
        "buffers than this rate x the fresh age, each waits open buffers / this rate",
    )
    # 1 (~2.4x on JSON at ~550 MB/s per core) is the default; 0 is ~15 % faster and ~25 % larger;
    # 2-3 trade CPU for slightly smaller objects.
    gzip_level: int = Field(
        1, ge=0, le=3, description="ISA-L deflate level (0-3) of the gzip batch objects"
    )
    upload_workers: int = Field(
        4, ge=1, le=64, description="threads that gzip, upload and register batches"
    )
    commit_interval_s: float = Field(
        1.0, gt=0, description="how often durable offsets are committed"
    )
    # What is not registered is not committed, and is read again by whoever consumes next.
    shutdown_timeout_s: float = Field(
        30.0, ge=0, description="SIGTERM: wait this long for batches to register"
    )
    revoke_timeout_s: float = Field(
        20.0, ge=0, description="partition revocation: wait this long for batches to register"
    )
    retry_backoff_max_s: float = Field(
        5.0, gt=0, description="longest wait between attempts at S3 or the spool"
    )
    spool_timeout_s: float = Field(10.0, gt=0, description="per-request timeout at the spool")
    s3_timeout_s: float = Field(30.0, gt=0, description="per-request timeout at S3")
    log_level: str = Field("INFO", description="log level")

    def fetch_queue_budget(self) -> int:
        """Bytes reserved for librdkafka's pre-fetch queue (counted in the memory limit)."""
        if self.fetch_queue_bytes:
            return self.fetch_queue_bytes
        return min(64 * MiB, self.memory_limit_bytes // 8)

    def data_budget(self) -> int:
        """Bytes the buffers and the batches in flight may hold: the limit less the fetch queue
        and an eighth of the limit left to the allocator. The 2 MiB mmap threshold (see
        ``__main__.tame_malloc``) keeps freed ~1 MiB messages in the heap for reuse rather than
        unmapping them, so the heap holds free blocks beyond the live data; without this share
        a drain at the 512 MiB limit peaked at ~680 MiB resident, over the limit + 150 MB."""
        return self.memory_limit_bytes - self.fetch_queue_budget() - self.memory_limit_bytes // 8
