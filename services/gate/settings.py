"""The gate's settings: the shared ones plus ``SKEIN_GATE_*``."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from common.settings import SharedSettings

MB = 1024 * 1024


class GateSettings(SharedSettings):
    """The gate: the Import API v2 and webhooks, each request durable in Kafka before its 2xx."""

    model_config = SettingsConfigDict(env_prefix="SKEIN_GATE_", extra="ignore")
    own_prefix: ClassVar[str] = "SKEIN_GATE_"
    credentials: ClassVar[frozenset[str]] = frozenset({"kafka"})

    host: str = Field("127.0.0.1", description="gate listen address")
    port: int = Field(8080, description="gate listen port")
    # More than the cores: 4 took ~20 % more records/s than 2 on 2 cores.
    workers: int = Field(
        4,
        ge=1,
        description="gate worker processes (more than the cores: each also waits on Kafka acks "
        "and body reads)",
    )
    request_timeout_s: float = Field(
        10.0,
        gt=0,
        description="deadline for Kafka to acknowledge a request's records (a 2xx is sent only "
        "once every record is acknowledged); then 503",
    )
    retry_after_s: int = Field(5, ge=1, description="`Retry-After` on 503")
    max_body_bytes: int = Field(20 * MB, ge=1024, description="body limit, raw and inflated (413)")
    max_records: int = Field(20_000, ge=1, description="records per request (400)")
    max_depth: int = Field(64, ge=2, description="JSON nesting limit (400)")
    max_key_length: int = Field(1024, ge=1, description="longest string key value")
    message_max_bytes: int = Field(
        1 * MB, ge=64 * 1024, description="target size of one Kafka message"
    )
    # Each Kafka message stays below the topic's max.message.bytes (8 MiB on the local stack).
    kafka_message_limit_bytes: int = Field(
        8 * MB, ge=64 * 1024, description="the topic's message limit (one record must fit)"
    )
    native_batch: bool = Field(
        True,
        description="decide /batch bodies in the native lane where skein_gate_native is "
        "installed (the bodies it cannot decide, and every error, take the Python path)",
    )
    compression: str = Field("lz4", description="producer compression")
    linger_ms: int = Field(
        5,
        ge=0,
        description="producer linger; 30: ~10 % less pipeline CPU per GB, ~30 ms more per 202",
    )
    token_ttl_s: float = Field(
        5.0, gt=0, description="token cache TTL: a revocation takes effect within it"
    )
    token_grace_s: float = Field(
        600.0, ge=0, description="control DB down: recently valid tokens keep working this long"
    )
    # Untrusted client schemas, kept compiled per gate process.
    schema_cache_size: int = Field(512, ge=1, description="compiled schemas kept per gate process")
    schema_cache_bytes: int = Field(
        256 << 20, ge=1 << 20, description="bytes of compiled code the schema cache holds"
    )
    schema_cache_client_bytes: int = Field(
        32 << 20,
        ge=1 << 20,
        description="bytes one client's schemas may hold in the cache (past it, that client's "
        "oldest go)",
    )
    # New schemas compile in a worker process (services/gate/compiler.py).
    schema_compile_timeout_s: float = Field(
        5.0,
        gt=0,
        description="a new client schema compiles in a worker process (nice 19) under this cap of "
        "CPU seconds (past it: 400, the worker is replaced)",
    )
    schema_compile_memory_bytes: int = Field(
        1 << 30,
        ge=64 << 20,
        description="... and this cap of address space (past it: 400, the worker is replaced)",
    )
    schema_compile_budget_s: float = Field(
        10.0,
        ge=0,
        description="per client and gate process, per minute: CPU seconds of the compile worker "
        "(waiting is free) before a new schema answers 429 (`schema_compiles`); 0 = no limit",
    )
    schema_compile_failures: int = Field(
        10,
        ge=0,
        description="per client and gate process, per minute: refused schemas before a new "
        "schema answers 429 (`schema_compiles`); 0 = no limit",
    )
    max_schema_bytes: int = Field(256 * 1024, ge=1024, description="largest client schema (400)")
    # Per-client quotas: generous defaults, they stop a runaway client, not a busy one.
    rate_limit_rps: float = Field(
        1000.0,
        ge=0,
        description="default requests/s per client, 0 = unlimited (`skein clients set-limits "
        "--rps` overrides)",
    )
    rate_limit_burst_s: float = Field(2.0, gt=0, description="burst allowance in seconds of rate")
    bytes_per_s: float = Field(
        128.0 * 1024 * 1024,
        ge=0,
        description="default request-body bytes/s per client, 0 = unlimited (`--bytes-per-s`)",
    )
    max_concurrent_requests: int = Field(
        64,
        ge=0,
        description="default requests in progress at once per client, split across the gate's "
        "processes, 0 = unlimited (`--concurrent`)",
    )
    max_tables_per_client: int = Field(
        2000,
        ge=0,
        description="default distinct tables per client, 0 = unlimited (`--tables`); tables idle "
        "past the spool's retention no longer count",
    )
    known_tables_cache: int = Field(
        100_000,
        ge=1,
        description="(client, table) pairs each gate process remembers as admitted",
    )
    metrics_dir: str = Field(
        "",
        description="prometheus multiprocess directory (emptied at start)",
        json_schema_extra={"doc_default": "`.run/metrics/gate` (unset: a temporary directory)"},
    )
    max_url_bytes: int = Field(
        8192,
        ge=256,
        description="a longer request line answers 414 (JSON body), before any route runs",
    )
    max_header_bytes: int = Field(
        16384, ge=1024, description="larger headers answer 431 (JSON body), before any route runs"
    )
    metrics_port: int = Field(
        9101,
        description="internal port of the gate's `/metrics` (all workers), `/healthz`, `/readyz`; "
        "the public port has no `/metrics`",
    )
