"""The gate's settings: the shared ones plus ``SKEIN_GATE_*``."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from common.settings import SharedSettings

MB = 1024 * 1024


class GateSettings(SharedSettings):
    model_config = SettingsConfigDict(env_prefix="SKEIN_GATE_", extra="ignore")
    own_prefix: ClassVar[str] = "SKEIN_GATE_"
    credentials: ClassVar[frozenset[str]] = frozenset({"kafka"})

    host: str = "127.0.0.1"
    port: int = 8080
    # Worker processes. More than the cores: a worker's event loop also waits on body reads and
    # Kafka acknowledgements between its parses (4 took ~20 % more records/s than 2 on 2 cores).
    workers: int = Field(4, ge=1)
    # A 2xx is sent only once every record is acknowledged by Kafka; past this, 503.
    request_timeout_s: float = Field(10.0, gt=0)
    retry_after_s: int = Field(5, ge=1)
    max_body_bytes: int = Field(20 * MB, ge=1024)
    max_records: int = Field(20_000, ge=1)
    max_depth: int = Field(64, ge=2)
    max_key_length: int = Field(1024, ge=1)
    # Each Kafka message stays below the topic's max.message.bytes (8 MiB on the local stack).
    message_max_bytes: int = Field(1 * MB, ge=64 * 1024)
    kafka_message_limit_bytes: int = Field(8 * MB, ge=64 * 1024)
    compression: str = "lz4"
    linger_ms: int = Field(5, ge=0)
    # Token lookups: a revocation takes effect within token_ttl_s on every process; while the
    # control DB is down, tokens seen within token_grace_s keep working.
    token_ttl_s: float = Field(5.0, gt=0)
    token_grace_s: float = Field(600.0, ge=0)
    # Untrusted client schemas.
    schema_cache_size: int = Field(512, ge=1)
    # ... and in bytes of compiled code, in all and per client (a client past its share
    # evicts its own oldest schemas).
    schema_cache_bytes: int = Field(256 << 20, ge=1 << 20)
    schema_cache_client_bytes: int = Field(32 << 20, ge=1 << 20)
    # New schemas compile in a worker process (services/gate/compiler.py): its caps (CPU
    # seconds and address space per schema), and what one client may spend on compiles per
    # minute (the worker's CPU seconds; 0 = no limit) before a new schema is 429.
    schema_compile_timeout_s: float = Field(5.0, gt=0)
    schema_compile_memory_bytes: int = Field(1 << 30, ge=64 << 20)
    schema_compile_budget_s: float = Field(10.0, ge=0)
    schema_compile_failures: int = Field(10, ge=0)
    max_schema_bytes: int = Field(256 * 1024, ge=1024)
    # Per-client quotas (0 = unlimited); a client's own settings (skein clients set-limits)
    # override each. Defaults are generous: they stop a runaway client, not a busy one.
    rate_limit_rps: float = Field(1000.0, ge=0)
    rate_limit_burst_s: float = Field(2.0, gt=0)
    bytes_per_s: float = Field(128.0 * 1024 * 1024, ge=0)
    max_concurrent_requests: int = Field(64, ge=0)
    max_tables_per_client: int = Field(2000, ge=0)
    # (client, table) pairs already admitted, remembered per process.
    known_tables_cache: int = Field(100_000, ge=1)
    metrics_dir: str = ""
    # Request line and headers: longer ones answer 414 / 431 before any route runs.
    max_url_bytes: int = Field(8192, ge=256)
    max_header_bytes: int = Field(16384, ge=1024)
    # /metrics (and /healthz, /readyz) for Prometheus, apart from the public port.
    metrics_port: int = 9101
