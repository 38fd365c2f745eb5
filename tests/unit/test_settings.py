from __future__ import annotations

import base64
import os
from pathlib import Path
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
    # A keyring of one random 32-byte key (a passphrase is refused in production).
    monkeypatch.setenv("SKEIN_SECRET_KEY", "k1:" + base64.b64encode(os.urandom(32)).decode())
    monkeypatch.delenv("SKEIN_SPOOL_TOKEN", raising=False)
    with pytest.raises(ValidationError, match="SKEIN_SPOOL_TOKEN"):
        SharedSettings()
    monkeypatch.setenv("SKEIN_SPOOL_TOKEN", "another-real-secret")
    monkeypatch.delenv("SKEIN_S3_SECRET_KEY", raising=False)
    with pytest.raises(ValidationError, match="SKEIN_S3_SECRET_KEY"):
        SharedSettings()
    monkeypatch.setenv("SKEIN_S3_SECRET_KEY", "an-s3-secret")
    monkeypatch.delenv("SKEIN_KAFKA_USERNAME", raising=False)
    with pytest.raises(ValidationError, match="SKEIN_KAFKA_USERNAME"):
        SharedSettings()
    monkeypatch.setenv("SKEIN_KAFKA_USERNAME", "gate")
    monkeypatch.setenv("SKEIN_KAFKA_PASSWORD", "a-kafka-password")
    assert SharedSettings().env == "production"


def test_production_requires_only_the_credentials_a_service_uses(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from services.gate.settings import GateSettings
    from services.loaders.postgres.settings import PostgresLoaderSettings

    monkeypatch.setenv("SKEIN_ENV", "production")
    for name in ("SECRET_KEY", "SPOOL_TOKEN", "S3_SECRET_KEY", "KAFKA_USERNAME", "KAFKA_PASSWORD"):
        monkeypatch.delenv(f"SKEIN_{name}", raising=False)
    # The gate opens no secrets and touches no batch: its Kafka user is all it needs.
    with pytest.raises(ValidationError, match="SKEIN_KAFKA_USERNAME"):
        GateSettings()
    monkeypatch.setenv("SKEIN_KAFKA_USERNAME", "gate")
    monkeypatch.setenv("SKEIN_KAFKA_PASSWORD", "a-kafka-password")
    assert GateSettings().env == "production"
    # A loader uses no Kafka, but needs the secret key, S3 and the spool.
    monkeypatch.delenv("SKEIN_KAFKA_USERNAME")
    with pytest.raises(ValidationError, match="SKEIN_SECRET_KEY"):
        PostgresLoaderSettings()
    monkeypatch.setenv("SKEIN_SECRET_KEY", "k1:" + base64.b64encode(os.urandom(32)).decode())
    monkeypatch.setenv("SKEIN_SPOOL_TOKEN", "another-real-secret")
    monkeypatch.setenv("SKEIN_S3_SECRET_KEY", "an-s3-secret")
    assert PostgresLoaderSettings().env == "production"


def test_kafka_clients_authenticate_with_scram_as_their_principal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SKEIN_KAFKA_USERNAME", raising=False)
    anonymous = SharedSettings().kafka_config()
    assert "sasl.username" not in anonymous and "security.protocol" not in anonymous
    monkeypatch.setenv("SKEIN_KAFKA_USERNAME", "streamery")
    monkeypatch.setenv("SKEIN_KAFKA_PASSWORD", "pw")
    config = SharedSettings().kafka_config(**{"group.id": "g"})
    assert config["security.protocol"] == "SASL_PLAINTEXT"
    assert config["sasl.mechanism"] == "SCRAM-SHA-512"
    assert (config["sasl.username"], config["sasl.password"], config["group.id"]) == (
        "streamery",
        "pw",
        "g",
    )


def test_the_env_file_fills_what_the_environment_does_not_set(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    env = tmp_path / "skein.env"
    env.write_text("SKEIN_KAFKA_USERNAME=admin\nSKEIN_KAFKA_PASSWORD=from-file\nSKEIN_TOPIC=t1\n")
    monkeypatch.setenv("SKEIN_ENV_FILE", str(env))
    monkeypatch.delenv("SKEIN_KAFKA_USERNAME", raising=False)
    monkeypatch.delenv("SKEIN_KAFKA_PASSWORD", raising=False)
    monkeypatch.setenv("SKEIN_TOPIC", "from-env")
    s = SharedSettings()
    assert (s.kafka_username, s.kafka_password.get_secret_value()) == ("admin", "from-file")
    assert s.topic == "from-env"  # the environment wins
    monkeypatch.setenv("SKEIN_ENV_FILE", "")
    assert SharedSettings().kafka_username is None


def test_shared_names_under_a_service_prefix_are_not_misspellings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from services.spool.settings import SpoolSettings

    monkeypatch.setenv("SKEIN_SPOOL_TOKEN", "t0ken")
    monkeypatch.setenv("SKEIN_SPOOL_URL", "http://127.0.0.1:9999")
    monkeypatch.setenv("SKEIN_SPOOL_PORT", "18081")
    s = SpoolSettings()
    assert (s.spool_token.get_secret_value(), s.spool_url, s.port) == (
        "t0ken",
        "http://127.0.0.1:9999",
        18081,
    )
    monkeypatch.setenv("SKEIN_SPOOL_PROT", "1")
    with pytest.raises(ValidationError, match="SKEIN_SPOOL_PROT"):
        SpoolSettings()
