"""Unit tests read settings from their own environment only, never the local stack's env file."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _no_stack_env_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SKEIN_ENV_FILE", "")
