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
    model_config = SettingsConfigDict(env_prefix="SKEIN_EXTRACTOR_", extra="ignore")
    own_prefix: ClassVar[str] = "SKEIN_EXTRACTOR_"
    credentials: ClassVar[frozenset[str]] = frozenset({"secret_key"})

    host: str = "127.0.0.1"
    metrics_port: int = Field(9107, ge=0, le=65535)
    # The gate the built-in target posts to, exactly as an outside client would.
    gate_url: str = "http://127.0.0.1:8080"
    # One virtualenv per tap package and version, installed on first use.
    taps_dir: str = Field(default_factory=default_taps_dir)
    tick_s: float = Field(1.0, gt=0)
    max_concurrent_runs: int = Field(4, ge=1)
    run_timeout_s: float = Field(3600.0, gt=0)
    # After a failed run: retry after min(cap, base * 2^(failures-1)), jittered, unless the
    # schedule comes sooner.
    retry_base_s: float = Field(30.0, gt=0)
    retry_cap_s: float = Field(3600.0, gt=0)
    # Built-in target: a table's records go to the gate in requests of at most this many
    # records / bytes; pending STATE is flushed at least this often.
    batch_records: int = Field(5000, ge=1, le=20_000)
    batch_bytes: int = Field(4 * MiB, ge=1024, le=16 * MiB)
    flush_interval_s: float = Field(10.0, gt=0)
    # How long the target retries a gate answering 5xx/429 or unreachable before the run fails.
    gate_retry_window_s: float = Field(300.0, ge=0)
    gate_timeout_s: float = Field(60.0, gt=0)
    # Tail of a tap's stderr kept per run (secrets redacted).
    stderr_limit_bytes: int = Field(256 * 1024, ge=1024)
    # Installing a tap (pip) may take this long.
    install_timeout_s: float = Field(600.0, gt=0)
    shutdown_timeout_s: float = Field(30.0, ge=0)
    # Tap code runs sandboxed (sandbox.py): as this user when the extractor runs as root, in a
    # bubblewrap namespace (auto: when the machine allows; bwrap: required; none: never).
    tap_user: str = "skein-tap"
    sandbox: Literal["auto", "bwrap", "none"] = "auto"
    # Comma-separated package names: the taps clients may use (empty: any), and the packages
    # that may build from source (every other one installs from wheels only).
    allowed_taps: str = ""
    allow_sdist: str = ""
    # Where pip finds taps: a private index, and/or a directory or page of wheels.
    pip_index_url: str | None = None
    pip_find_links: str | None = None

    def install_policy(self) -> InstallPolicy:
        return InstallPolicy.parse(
            self.allowed_taps, self.allow_sdist, self.pip_index_url, self.pip_find_links
        )

    log_level: str = "INFO"
