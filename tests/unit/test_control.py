"""The control plane's pure parts: token format, name checks, destination settings."""

from __future__ import annotations

import hashlib
import re

import pytest

from common import control, destination_config, tokens
from services.control import destinations, webhooks
from services.control.cli.shared import pairs
from services.control.destinations import settings_of as destination_settings


def test_tokens_are_url_safe_prefixed_and_unique() -> None:
    api = {tokens.new_token("api") for _ in range(100)}
    webhook = {tokens.new_token("webhook") for _ in range(100)}
    assert len(api) == len(webhook) == 100
    assert all(re.fullmatch(r"skn_[A-Za-z0-9_-]{43}", t) for t in api)
    assert all(re.fullmatch(r"whk_[A-Za-z0-9_-]{32}", t) for t in webhook)


def test_unknown_token_kind_is_refused() -> None:
    with pytest.raises(control.ControlError):
        tokens.new_token("admin")


def test_hash_and_prefix() -> None:
    assert tokens.hash_token("skn_abc") == hashlib.sha256(b"skn_abc").digest()
    assert tokens.token_prefix("skn_abcdefgh") == "skn_abcd"
    assert webhooks.webhook_url_path(7, "whk_x") == "/v1/clients/7/token/whk_x"


@pytest.mark.parametrize("name", ["", "x" * 256, "_sdc_rejected", "_SDC_x", "a\x00b", "a\nb"])
def test_bad_table_names_are_refused(name: str) -> None:
    with pytest.raises(control.ControlError):
        webhooks.check_table_name(name)


@pytest.mark.parametrize("name", ["data", "Orders 2024", "x" * 255, "événements"])
def test_good_table_names_pass(name: str) -> None:
    assert webhooks.check_table_name(name) == name


@pytest.mark.parametrize("field", ["", "a.b", "_sdc_sequence", "x" * 256])
def test_bad_key_fields_are_refused(field: str) -> None:
    with pytest.raises(control.ControlError):
        webhooks.check_key_field(field)


def test_good_key_fields_pass() -> None:
    assert webhooks.check_key_field("id") == "id"
    assert webhooks.check_key_field(None) is None


def test_split_dsn_moves_the_password_out() -> None:
    params, password = destinations.split_dsn("postgresql://u:p%40ss@h:5433/db?sslmode=require")
    assert params == {
        "user": "u",
        "host": "h",
        "port": "5433",
        "dbname": "db",
        "sslmode": "require",
    }
    assert password == "p@ss"
    params, password = destinations.split_dsn("host=h dbname=d")
    assert params == {"host": "h", "dbname": "d"}
    assert password is None


def test_an_invalid_dsn_does_not_echo_its_text() -> None:
    with pytest.raises(control.ControlError) as caught:
        destinations.split_dsn("host=h password s3cret-value")
    assert "s3cret" not in str(caught.value)


def test_check_destination_refuses_secrets_in_config() -> None:
    with pytest.raises(control.ControlError, match="password"):
        destination_config.check_destination("postgres", {"dsn_params": {"password": "x"}}, {})
    with pytest.raises(control.ControlError, match="private_key"):
        destination_config.check_destination("snowflake", {"private_key": "x"}, {})
    with pytest.raises(control.ControlError, match="both"):
        destination_config.check_destination("bigquery", {"project": "p"}, {"project": "p"})
    with pytest.raises(control.ControlError, match="not one of"):
        destination_config.check_destination("mysql", {}, {})
    destination_config.check_destination(
        "postgres", {"dsn_params": {"host": "h"}}, {"password": "x"}
    )


def test_destination_settings_for_postgres() -> None:
    config, secrets = destination_settings(
        "postgres",
        dsn="postgresql://u:pw@h/db",
        schema="acme",
        settings={},
        password=None,
        secrets={},
    )
    assert config == {"dsn_params": {"user": "u", "host": "h", "dbname": "db"}, "schema": "acme"}
    assert secrets == {"password": "pw"}
    with pytest.raises(control.ControlError, match="unknown setting 'batch_rows'"):
        destination_settings(
            "postgres", dsn="host=h", schema=None, settings={"batch_rows": "1000"},
            password=None, secrets={},
        )  # fmt: skip


def test_destination_settings_refuse_ambiguity() -> None:
    def settings(kind: str, dsn: str | None, password: str | None = None, **extra: str) -> None:
        destination_settings(
            kind, dsn=dsn, schema=None, settings=extra, password=password, secrets={}
        )

    with pytest.raises(control.ControlError, match="once"):
        settings("postgres", "postgresql://u:pw@h/db", password="pw2")
    with pytest.raises(control.ControlError, match="needs --dsn"):
        settings("redshift", None)
    with pytest.raises(control.ControlError, match="no --dsn"):
        settings("bigquery", "host=h")
    with pytest.raises(control.ControlError, match="--set cannot"):
        settings("bigquery", None, schema="x")


def test_destination_settings_for_bigquery_keep_secrets_apart() -> None:
    config, secrets = destination_settings(
        "bigquery",
        dsn=None,
        schema="analytics",
        settings={"project": "p"},
        password=None,
        secrets={"credentials_json": '{"type": "service_account"}'},
    )
    assert config == {"schema": "analytics", "project": "p"}
    assert secrets == {"credentials_json": '{"type": "service_account"}'}


@pytest.mark.parametrize(
    ("settings", "secrets", "complaint"),
    [
        ({}, {}, "needs --set project="),
        ({"project": "p", "api_endpoint": "localhost:9050"}, {}, "not an http"),
        ({"project": "p"}, {"credentials_json": "{}"}, "credentials file's JSON"),
        ({"project": "p", "warehouse": "w"}, {}, "unknown bigquery setting"),
    ],
)
def test_destination_settings_for_bigquery_are_checked_when_set(
    settings: dict[str, str], secrets: dict[str, str], complaint: str
) -> None:
    with pytest.raises(control.ControlError, match=complaint):
        destination_settings(
            "bigquery", dsn=None, schema=None, settings=settings, password=None, secrets=secrets
        )


def test_pairs() -> None:
    assert pairs(["a=1", "b=x=y", "c="], "--set") == {"a": "1", "b": "x=y", "c": ""}
    for bad in (["a"], ["=1"]):
        with pytest.raises(control.ControlError):
            pairs(bad, "--set")


@pytest.mark.parametrize("param", ["options", "service", "passfile", "sslkey"])
def test_libpq_parameters_beyond_the_allow_list_are_refused(param: str) -> None:
    params, _ = destinations.split_dsn(f"host=h dbname=d {param}=x")
    with pytest.raises(control.ControlError, match=param):
        destination_config.check_destination("postgres", {"dsn_params": params}, {})


def test_the_loader_limits_win_over_what_a_destination_stored() -> None:
    from services.loaders.postgres.connection import SessionLimits, connection_params

    stored = {
        "dsn_params": {"host": "h", "options": "-c statement_timeout=0", "connect_timeout": "600"}
    }
    got = connection_params(stored, {"password": "p"}, SessionLimits(connect_timeout_s=10), "app")
    assert got["connect_timeout"] == 10 and got["password"] == "p"
    assert "statement_timeout=300000" in got["options"] and "=0" not in got["options"]
    assert got["keepalives"] == 1 and got["tcp_user_timeout"] > 0
