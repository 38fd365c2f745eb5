"""The control service's settings: the shared ones plus ``SKEIN_CONTROL_*``."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from common.settings import SharedSettings


class ControlSettings(SharedSettings):
    """The control service: the management API (`/v1/...`, Stitch Connect v4's read side) and
    the notification hooks' delivery."""

    model_config = SettingsConfigDict(env_prefix="SKEIN_CONTROL_", extra="ignore")
    own_prefix: ClassVar[str] = "SKEIN_CONTROL_"
    credentials: ClassVar[frozenset[str]] = frozenset({"secret_key"})

    host: str = Field("127.0.0.1", description="control service (management API) listen address")
    port: int = Field(8082, description="control service listen port")
    metrics_port: int = Field(
        9108,
        description="internal port of its `/metrics` (all workers), `/healthz`, `/readyz` (the "
        "control database), apart from the API",
    )
    workers: int = Field(2, ge=1, description="control worker processes")
    metrics_dir: str = Field(
        "",
        description="prometheus multiprocess directory (emptied at start)",
        json_schema_extra={"doc_default": "(a temporary directory)"},
    )
    db_pool_size: int = Field(4, ge=1, description="control-DB connections per process")
    max_body_bytes: int = Field(
        256 * 1024,
        ge=1024,
        description="a larger request body answers 413 (a destination with a credentials file "
        "fits)",
    )
    page_size: int = Field(
        100, ge=1, description="list pages: size when none is asked for (`?limit=`)"
    )
    max_page_size: int = Field(1000, ge=1, description="list pages: the most one page holds")
    log_url_ttl_s: int = Field(
        300, ge=10, description="Connect v4: how long a signed log link lives"
    )
    sync_wait_s: float = Field(
        15.0,
        gt=0,
        description="Connect v4: how long `POST .../sync` waits for the extractor to start the "
        "run (then 503)",
    )
    # One delivery worker per API worker process; claims never overlap.
    hook_senders: int = Field(
        4, ge=0, description="hook delivery threads per control worker process (0: none)"
    )
    # A slow receiver holds up only its own client.
    hook_per_client: int = Field(
        2, ge=1, description="most deliveries of one client in flight at once"
    )
    hook_timeout_s: float = Field(10.0, gt=0, description="one delivery's request timeout")
    hook_poll_s: float = Field(1.0, gt=0, description="how often due deliveries are looked for")
    hook_retry_base_s: float = Field(
        2.0,
        gt=0,
        description="a failed delivery is tried again after base·2^(n-1) (jittered, capped) "
        "until failures outlast the window from the event: then dead",
    )
    hook_retry_max_s: float = Field(3600.0, gt=0, description="... capped at this")
    hook_retry_window_s: float = Field(86400.0, gt=0, description="... within this window")
    # The web console (services/control/console).
    prometheus_url: str = Field(
        "http://127.0.0.1:9090",
        description="console: the Prometheus whose HTTP API the overview's charts query",
    )
    console_idle_s: int = Field(
        1800, ge=60, description="console: a session unused this long ends (log in again)"
    )
    console_max_session_s: int = Field(
        43200, ge=300, description="console: a session ends this long after its login, used or not"
    )
    console_secure_cookie: Literal["auto", "always", "never"] = Field(
        "auto",
        description="console: the session cookie's Secure flag; `auto`: when the request came "
        "over HTTPS (its scheme, or `X-Forwarded-Proto` from a trusted proxy)",
    )
    login_failures_per_user: int = Field(
        5, ge=1, description="console: failed logins of one user name per window, then 429"
    )
    login_failures_per_address: int = Field(
        20, ge=1, description="console: failed logins from one address per window, then 429"
    )
    login_window_s: int = Field(
        900, ge=10, description="console: the window the failed-login limits count over"
    )
