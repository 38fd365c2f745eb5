"""The control service's settings: the shared ones plus ``SKEIN_CONTROL_*``."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from common.settings import SharedSettings


class ControlSettings(SharedSettings):
    model_config = SettingsConfigDict(env_prefix="SKEIN_CONTROL_", extra="ignore")
    own_prefix: ClassVar[str] = "SKEIN_CONTROL_"
    credentials: ClassVar[frozenset[str]] = frozenset({"secret_key"})

    host: str = "127.0.0.1"
    port: int = 8082
    # /metrics, /healthz and /readyz, apart from the API
    metrics_port: int = 9108
    workers: int = Field(2, ge=1)
    metrics_dir: str = ""
    db_pool_size: int = Field(4, ge=1)
    # A request body past this answers 413 (a destination with a credentials file fits).
    max_body_bytes: int = Field(256 * 1024, ge=1024)
    # Lists: the page size when none is asked for, and the most one page may hold.
    page_size: int = Field(100, ge=1)
    max_page_size: int = Field(1000, ge=1)
    # Stitch Connect v4: how long a signed log URL lives; how long POST .../sync waits for the
    # extractor to start the run before answering 503.
    log_url_ttl_s: int = Field(300, ge=10)
    sync_wait_s: float = Field(15.0, gt=0)
    # Notification hooks' delivery worker (one per API worker process; claims never overlap):
    # sender threads, how many of one client's deliveries may be in flight at once (a slow
    # receiver holds up only its own client), the request timeout, and the retry schedule
    # (base * 2^(attempt-1) with jitter, capped, until failures outlast the window: dead).
    hook_senders: int = Field(4, ge=0)
    hook_per_client: int = Field(2, ge=1)
    hook_timeout_s: float = Field(10.0, gt=0)
    hook_poll_s: float = Field(1.0, gt=0)
    hook_retry_base_s: float = Field(2.0, gt=0)
    hook_retry_max_s: float = Field(3600.0, gt=0)
    hook_retry_window_s: float = Field(86400.0, gt=0)
