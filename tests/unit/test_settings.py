from __future__ import annotations

from typing import ClassVar

import pytest
from pydantic import ValidationError
from pydantic_settings import SettingsConfigDict

from common.settings import SharedSettings


class ExampleSettings(SharedSettings):
    model_config = SettingsConfigDict(env_prefix="SKEIN_EXAMPLE_", extra="ignore")
    own_prefix: ClassVar[str] = "SKEIN_EXAMPLE_"

    workers: int = 2


def test_defaults_match_the_local_stack(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SKEIN_KAFKA_BOOTSTRAP", "SKEIN_TOPIC", "SKEIN_CONTROL_DSN", "SKEIN_ENV"):
        monkeypatch.delenv(name, raising=False)
    s = SharedSettings()
    assert s.kafka_bootstrap == "127.0.0.1:19092,127.0.0.1:29092,127.0.0.1:39092"
    assert s.topic == "skein.records"
    assert s.control_dsn.get_secret_value().endswith("@127.0.0.1:5432/skein")


def test_shared_and_own_variables_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SKEIN_TOPIC", "other.topic")
    monkeypatch.setenv("SKEIN_EXAMPLE_WORKERS", "7")
    s = ExampleSettings()
    assert (s.topic, s.workers) == ("other.topic", 7)


def test_misspelt_own_variable_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SKEIN_EXAMPLE_WORKRS", "7")
    with pytest.raises(ValidationError, match="SKEIN_EXAMPLE_WORKRS"):
        ExampleSettings()


def test_placeholder_secret_refused_in_production(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SKEIN_ENV", "production")
    monkeypatch.delenv("SKEIN_SECRET_KEY", raising=False)
    with pytest.raises(ValidationError, match="SKEIN_SECRET_KEY"):
        SharedSettings()
    monkeypatch.setenv("SKEIN_SECRET_KEY", "a-real-secret-from-the-vault")
    assert SharedSettings().env == "production"
