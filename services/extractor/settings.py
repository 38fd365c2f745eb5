"""The extractor's settings: the shared ones plus ``SKEIN_EXTRACTOR_*``."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from common.settings import SharedSettings
from services.extractor.taps import InstallPolicy

MiB = 1024 * 1024


def default_taps_dir() -> str:
    """Taps live outside any checkout, shared by every clone and kept across runs."""
    return str(Path.home() / ".cache" / "skein" / "taps")


class ExtractorSettings(SharedSettings):
    """The extractor: runs each client's Singer taps on their schedules, into the gate."""

    model_config = SettingsConfigDict(env_prefix="SKEIN_EXTRACTOR_", extra="ignore")
    own_prefix: ClassVar[str] = "SKEIN_EXTRACTOR_"
    credentials: ClassVar[frozenset[str]] = frozenset({"secret_key"})

    host: str = Field(
        "127.0.0.1",
        description="listen address of the extractor's `/metrics`, `/healthz`, `/readyz`",
    )
    metrics_port: int = Field(9107, ge=0, le=65535, description="... and their port")
    # Exactly as an outside client would.
    gate_url: str = Field(
        "http://127.0.0.1:8080",
        description="the gate the built-in target posts to (`/v2/import/batch`, the client's "
        "token)",
    )
    taps_dir: str = Field(
        default_factory=default_taps_dir,
        description="one virtualenv per tap package and version, installed on first use (also "
        "read by `skein integrations add`)",
        json_schema_extra={"doc_default": "`~/.cache/skein/taps`"},
    )
    tick_s: float = Field(1.0, gt=0, description="how often due integrations are looked for")
    max_concurrent_runs: int = Field(
        4,
        ge=1,
        description="runs at once per extractor process (one at a time per integration)",
    )
    run_timeout_s: float = Field(
        3600.0, gt=0, description="a run still going after this is stopped and fails"
    )
    retry_base_s: float = Field(
        30.0,
        gt=0,
        description="after a failed run, retry after min(cap, base·2^(n-1)), jittered, or at the "
        "next scheduled time if sooner",
    )
    retry_cap_s: float = Field(3600.0, gt=0, description="... the cap")
    batch_records: int = Field(
        5000,
        ge=1,
        le=20_000,
        description="most records of one table per request to the gate (built-in target)",
    )
    batch_bytes: int = Field(
        4 * MiB,
        ge=1024,
        le=16 * MiB,
        description="most bytes of one table per request to the gate",
    )
    flush_interval_s: float = Field(
        10.0,
        gt=0,
        description="a tap's STATE waits at most about this long for its records to be sent and "
        "saved",
    )
    gate_retry_window_s: float = Field(
        300.0,
        ge=0,
        description="the target retries a gate answering 5xx/429 or unreachable this long, then "
        "the run fails",
    )
    gate_timeout_s: float = Field(60.0, gt=0, description="one request to the gate")
    stderr_limit_bytes: int = Field(
        256 * 1024,
        ge=1024,
        description="tail of a tap's stderr kept per run (secrets redacted)",
    )
    install_timeout_s: float = Field(
        600.0, gt=0, description="longest a tap install (pip) may take"
    )
    shutdown_timeout_s: float = Field(
        30.0,
        ge=0,
        description="SIGTERM: runs in progress are stopped (state kept) and waited for this long",
    )
    # Tap code runs sandboxed: sandbox.py.
    tap_user: str = Field(
        "skein-tap",
        description="taps run as this unprivileged user when the extractor runs as root "
        "(`make up` creates it)",
    )
    sandbox: Literal["auto", "bwrap", "none"] = Field(
        "auto",
        description="`auto`: taps run in a bubblewrap namespace when the machine allows; "
        "`bwrap`: required (refuse to start otherwise); `none`: never",
    )
    allowed_taps: str = Field(
        "", description="comma-separated packages clients may use as taps (empty: any)"
    )
    allow_sdist: str = Field(
        "",
        description="comma-separated packages that may (and then do) build from source; every "
        "other one installs from wheels only",
    )
    pip_index_url: str | None = Field(
        None,
        description="where pip finds taps: a private index",
        json_schema_extra={"doc_default": "PyPI"},
    )
    pip_find_links: str | None = Field(
        None, description="where pip finds taps: a directory or page of wheels"
    )

    def install_policy(self) -> InstallPolicy:
        return InstallPolicy.parse(
            self.allowed_taps, self.allow_sdist, self.pip_index_url, self.pip_find_links
        )

    log_level: str = Field("INFO", description="log level")
