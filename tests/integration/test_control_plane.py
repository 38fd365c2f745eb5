"""The control plane through the real ``skein`` CLI, and the lookups the gate makes."""

from __future__ import annotations

import base64
import os
import uuid
from collections.abc import Iterator
from contextlib import closing
from typing import Any

import orjson
import pytest

from common import control, crypto, db, destination_config, tokens
from common import migrate as migrations
from common.settings import SharedSettings
from services.control import accounts, destinations
from support.cli import ok, skein


@pytest.fixture(scope="module")
def conn() -> Iterator[control.Connection]:
    with closing(db.connect()) as connection:
        migrations.migrate(connection)
        yield connection


@pytest.fixture
def client_id(conn: control.Connection) -> int:
    """A new client, made through the domain (``skein clients create`` has its own tests)."""
    return int(accounts.create_client(conn, f"test-{uuid.uuid4().hex[:8]}")["client_id"])


@pytest.fixture
def unknown_client_id(conn: control.Connection) -> int:
    with conn, conn.cursor() as cur:
        cur.execute("SELECT coalesce(max(client_id), 0) + 1000 FROM clients")
        row = cur.fetchone()
    assert row is not None
    return int(row[0])


def scalar(conn: control.Connection, sql: str, params: tuple[Any, ...]) -> Any:
    with conn, conn.cursor() as cur:
        cur.execute(sql, params)
        row = cur.fetchone()
    assert row is not None
    return row[0]


def test_clients_create_and_list(conn: control.Connection) -> None:
    name = f"acme-{uuid.uuid4().hex[:8]}"
    created = ok("clients", "create", name)
    assert isinstance(created["client_id"], int)
    assert created["name"] == name
    listed = ok("clients", "list")["clients"]
    assert {"client_id": created["client_id"], "name": name}.items() <= next(
        c for c in listed if c["client_id"] == created["client_id"]
    ).items()


def test_api_token_is_shown_once_and_stored_only_as_a_hash(
    conn: control.Connection, client_id: int
) -> None:
    created = ok("tokens", "create", str(client_id))
    token = created["token"]
    assert token.startswith("skn_")
    assert created["client_id"] == client_id
    assert created["token_prefix"] == token[:8]

    listed = ok("tokens", "list", str(client_id))
    assert listed["client_id"] == client_id
    assert [t["token_id"] for t in listed["tokens"]] == [created["token_id"]]
    assert listed["tokens"][0]["token_prefix"] == token[:8]
    assert listed["tokens"][0]["revoked_at"] is None
    assert token not in orjson.dumps(listed).decode()
    assert "token" not in listed["tokens"][0]

    plain = "SELECT count(*) FROM api_tokens WHERE token_hash = convert_to(%s, 'UTF8')"
    assert scalar(conn, plain, (token,)) == 0
    anywhere = "SELECT count(*) FROM api_tokens t WHERE strpos(t::text, %s) > 0"
    assert scalar(conn, anywhere, (token,)) == 0
    hashed = "SELECT count(*) FROM api_tokens WHERE token_hash = %s"
    assert scalar(conn, hashed, (tokens.hash_token(token),)) == 1


def test_api_token_lookup_follows_revocation_and_rate_limit(
    conn: control.Connection, client_id: int
) -> None:
    created = ok("tokens", "create", str(client_id))
    assert tokens.lookup_api_token(conn, created["token"]) == tokens.ApiTokenInfo(client_id, None)
    with conn, conn.cursor() as cur:
        cur.execute("UPDATE clients SET rate_limit_rps = 50 WHERE client_id = %s", (client_id,))
    assert tokens.lookup_api_token(conn, created["token"]) == tokens.ApiTokenInfo(client_id, 50)
    assert tokens.lookup_api_token(conn, created["token"] + "x") is None
    assert tokens.lookup_api_token(conn, "whk_" + created["token"][4:]) is None

    assert ok("tokens", "revoke", str(created["token_id"])) == {
        "token_id": created["token_id"],
        "revoked": True,
    }
    assert tokens.lookup_api_token(conn, created["token"]) is None
    again = ok("tokens", "revoke", str(created["token_id"]))
    assert again["revoked"] is False
    listed = ok("tokens", "list", str(client_id))["tokens"]
    assert listed[0]["revoked_at"] is not None


def test_revoking_an_unknown_token_is_an_error(conn: control.Connection) -> None:
    missing = scalar(conn, "SELECT coalesce(max(token_id), 0) + 1000 FROM api_tokens", ())
    code, out = skein("tokens", "revoke", str(missing))
    assert code == 1
    assert out == {"error": f"no API token {missing}"}


def test_webhook_create_list_lookup_revoke(conn: control.Connection, client_id: int) -> None:
    created = ok("webhooks", "create", str(client_id), "--table", "orders", "--key", "id")
    token = created["token"]
    assert token.startswith("whk_")
    assert created["url_path"] == f"/v1/clients/{client_id}/token/{token}"
    assert (created["table_name"], created["key_field"]) == ("orders", "id")

    default = ok("webhooks", "create", str(client_id))
    assert (default["table_name"], default["key_field"]) == ("data", None)

    listed = ok("webhooks", "list", str(client_id))
    assert [w["webhook_id"] for w in listed["webhooks"]] == [
        created["webhook_id"],
        default["webhook_id"],
    ]
    assert listed["webhooks"][0]["token_prefix"] == token[:8]
    assert token not in orjson.dumps(listed).decode()
    anywhere = "SELECT count(*) FROM webhooks w WHERE strpos(w::text, %s) > 0"
    assert scalar(conn, anywhere, (token,)) == 0

    assert tokens.lookup_webhook(conn, token) == tokens.WebhookInfo(
        webhook_id=created["webhook_id"],
        client_id=client_id,
        table_name="orders",
        key_field="id",
        rate_limit_rps=None,
    )
    assert tokens.lookup_api_token(conn, token) is None  # a webhook token is not an API token

    assert ok("webhooks", "revoke", str(created["webhook_id"]))["revoked"] is True
    assert tokens.lookup_webhook(conn, token) is None
    assert tokens.lookup_webhook(conn, default["token"]) is not None


@pytest.mark.parametrize(
    "args", [("--table", "_sdc_rejected"), ("--table", ""), ("--key", "a.b"), ("--key", "_sdc_x")]
)
def test_webhook_names_are_checked(client_id: int, args: tuple[str, str]) -> None:
    code, out = skein("webhooks", "create", str(client_id), *args)
    assert code == 1
    assert "error" in out


def destination_row(conn: control.Connection, client_id: int) -> str:
    """The whole stored row as text, secrets column included."""
    return str(
        scalar(conn, "SELECT d::text FROM destinations d WHERE client_id = %s", (client_id,))
    )


def revealed_secrets(conn: control.Connection, key: str, client_id: int) -> dict[str, Any]:
    """The client's destination secrets, decrypted with ``key`` (as a loader reads them)."""
    revealed = destination_config.get_destination(conn, key, client_id, reveal=True)
    assert revealed is not None
    secrets: dict[str, Any] = revealed["secrets"]
    return secrets


def test_destination_password_in_the_dsn_is_stored_only_encrypted(
    conn: control.Connection, settings: SharedSettings, client_id: int
) -> None:
    password = f"pw-{uuid.uuid4().hex}"
    dsn = f"postgresql://loader:{password}@127.0.0.1:5433/warehouse?sslmode=disable"
    shown = ok("destinations", "set", str(client_id), "postgres", "--dsn", dsn, "--schema", "acme")
    assert shown["client_id"] == client_id
    assert shown["type"] == "postgres"
    assert shown["config"] == {
        "dsn_params": {
            "user": "loader",
            "host": "127.0.0.1",
            "port": "5433",
            "dbname": "warehouse",
            "sslmode": "disable",
        },
        "schema": "acme",
    }
    assert shown["secrets_set"] == ["password"]
    assert password not in orjson.dumps(shown).decode()
    assert ok("destinations", "show", str(client_id)) == shown

    assert password not in destination_row(conn, client_id)
    in_secrets = (
        "SELECT position(convert_to(%s, 'UTF8') IN secrets) FROM destinations WHERE client_id = %s"
    )
    assert scalar(conn, in_secrets, (password, client_id)) == 0

    key = settings.secret_key.get_secret_value()
    assert revealed_secrets(conn, key, client_id) == {"password": password}
    hidden = destination_config.get_destination(conn, key, client_id)
    assert hidden is not None and "secrets" not in hidden


def test_destination_set_twice_replaces_with_a_password_from_the_environment(
    conn: control.Connection, settings: SharedSettings, client_id: int
) -> None:
    ok(
        "destinations",
        "set",
        str(client_id),
        "postgres",
        "--dsn",
        "postgresql://a:first@127.0.0.1:5433/db",
    )
    password = f"env-{uuid.uuid4().hex}"
    ok("clients", "allow", str(client_id), "--redshift-role", "arn:aws:iam::1:role/x")
    shown = ok(
        "destinations",
        "set",
        str(client_id),
        "redshift",
        "--dsn",
        "host=127.0.0.1 dbname=dev user=loader port=5433",
        "--password-env",
        "TEST_DEST_PASSWORD",
        "--set",
        "iam_role=arn:aws:iam::1:role/x",
        "--set",
        "s3_bucket=staging",
        env={"TEST_DEST_PASSWORD": password},
    )
    assert shown["type"] == "redshift"
    assert shown["config"]["iam_role"] == "arn:aws:iam::1:role/x"
    assert shown["secrets_set"] == ["password"]
    assert password not in orjson.dumps(shown).decode()
    assert password not in destination_row(conn, client_id)
    count = "SELECT count(*) FROM destinations WHERE client_id = %s"
    assert scalar(conn, count, (client_id,)) == 1
    key = settings.secret_key.get_secret_value()
    assert revealed_secrets(conn, key, client_id) == {"password": password}


def test_destination_password_prompt_keeps_stdout_to_the_json(
    conn: control.Connection, settings: SharedSettings, client_id: int
) -> None:
    password = f"typed-{uuid.uuid4().hex}"
    shown = ok(
        "destinations",
        "set",
        str(client_id),
        "snowflake",
        "--password-prompt",
        "--set",
        "account=xy12345",
        "--set",
        "user=loader",
        "--set",
        "database=ANALYTICS",
        "--schema",
        "RAW",
        stdin=password + "\n",
    )
    assert shown["config"] == {
        "account": "xy12345",
        "user": "loader",
        "database": "ANALYTICS",
        "schema": "RAW",
    }
    assert shown["secrets_set"] == ["password"]
    key = settings.secret_key.get_secret_value()
    assert revealed_secrets(conn, key, client_id) == {"password": password}


def test_destination_secret_from_the_environment(
    conn: control.Connection, settings: SharedSettings, client_id: int
) -> None:
    credentials = orjson.dumps({"type": "service_account", "private_key": "-----BEGIN..."}).decode()
    shown = ok(
        "destinations",
        "set",
        str(client_id),
        "bigquery",
        "--set",
        "project=acme-dw",
        "--schema",
        "skein",
        "--secret-env",
        "credentials_json=TEST_BQ_CREDENTIALS",
        env={"TEST_BQ_CREDENTIALS": credentials},
    )
    assert shown["config"] == {"project": "acme-dw", "schema": "skein"}
    assert shown["secrets_set"] == ["credentials_json"]
    assert "BEGIN" not in destination_row(conn, client_id)
    key = settings.secret_key.get_secret_value()
    assert revealed_secrets(conn, key, client_id) == {"credentials_json": credentials}


def test_a_secret_in_plain_config_is_refused(client_id: int) -> None:
    code, out = skein("destinations", "set", str(client_id), "snowflake", "--set", "password=oops")
    assert code == 1
    assert "error" in out and "oops" not in out["error"]


def test_the_wrong_secret_key_cannot_show_a_destination(client_id: int) -> None:
    ok(
        "destinations",
        "set",
        str(client_id),
        "postgres",
        "--dsn",
        "postgresql://a:pw@127.0.0.1:5433/db",
    )
    code, out = skein("destinations", "show", str(client_id), env={"SKEIN_SECRET_KEY": "other"})
    assert code == 1
    assert "SKEIN_SECRET_KEY" in out["error"]


def test_a_client_without_destination_is_an_error(client_id: int) -> None:
    code, out = skein("destinations", "show", str(client_id))
    assert (code, out) == (1, {"error": f"client {client_id} has no destination"})


@pytest.mark.parametrize(
    "command",
    [
        ("tokens", "create"),
        ("tokens", "list"),
        ("webhooks", "create"),
        ("webhooks", "list"),
        ("destinations", "show"),
        ("destinations", "set", "{id}", "postgres", "--dsn", "postgresql://a:pw@127.0.0.1:5433/db"),
    ],
)
def test_an_unknown_client_is_an_error(unknown_client_id: int, command: tuple[str, ...]) -> None:
    args = [a.format(id=unknown_client_id) for a in command]
    if "{id}" not in command:
        args.append(str(unknown_client_id))
    code, out = skein(*args)
    assert (code, out) == (1, {"error": f"no client {unknown_client_id}"})


@pytest.mark.parametrize(
    ("dsn", "reason"),
    [
        ("postgresql://postgres@127.0.0.1:5432/skein", "control database"),
        ("postgresql://u@169.254.169.254/db", "link-local"),
        ("postgresql://u@10.1.2.3:5432/db", "private"),
        ("postgresql://u@127.0.0.1:8333/db", "S3 endpoint"),
        ("host=/var/run/postgresql dbname=warehouse", "does not resolve"),
        ("host=127.0.0.1 port=5433 dbname=w user=u options='-c statement_timeout=0'", "options"),
        ("host=127.0.0.1 port=5433 dbname=w user=u service=prod", "service"),
        ("host=127.0.0.1 port=5433 dbname=w user=u passfile=/root/.pgpass", "passfile"),
    ],
)
def test_a_destination_pointing_where_clients_may_not_reach_is_refused_and_not_stored(
    conn: control.Connection, client_id: int, dsn: str, reason: str
) -> None:
    code, out = skein(
        "destinations",
        "set",
        str(client_id),
        "postgres",
        "--dsn",
        dsn,
        "--schema",
        "public",
        env={"SKEIN_DESTINATION_ALLOWED_NETWORKS": "127.0.0.1:5433"},
    )
    assert code == 1, out
    assert reason in out["error"]
    assert scalar(conn, "SELECT count(*) FROM destinations WHERE client_id = %s", (client_id,)) == 0


def test_destinations_test_connects_and_reports(
    conn: control.Connection, settings: SharedSettings, client_id: int
) -> None:
    ok(
        "destinations",
        "set",
        str(client_id),
        "postgres",
        "--dsn",
        "postgresql://postgres@127.0.0.1:5433/warehouse",
    )
    report = ok("destinations", "test", str(client_id))
    assert report["ok"] is True and report["type"] == "postgres"
    assert "PostgreSQL" in report["server"] and report["ms"] > 0
    # Stored past the CLI (as a DNS change would make it): the test refuses it, as loaders do.
    destinations.set_destination(
        conn,
        settings.secret_key.get_secret_value(),
        client_id,
        "postgres",
        {"dsn_params": {"host": "127.0.0.1", "port": "5432", "dbname": "skein"}},
        {},
    )
    code, report = skein("destinations", "test", str(client_id))
    assert code == 1 and report["ok"] is False
    assert "refused by the network policy" in report["error"]
    assert "control database" in report["error"]


def test_the_platforms_credentials_only_for_what_an_operator_allowed(client_id: int) -> None:
    role = "arn:aws:iam::1:role/platform"
    redshift = (
        "destinations", "set", str(client_id), "redshift",
        "--dsn", "host=127.0.0.1 port=5433 dbname=dev user=loader",
        "--set", "s3_bucket=skein", "--set", f"iam_role={role}",
    )  # fmt: skip
    code, out = skein(*redshift)
    assert code == 1 and "iam_role" in out["error"] and "skein clients allow" in out["error"]
    bigquery = ("destinations", "set", str(client_id), "bigquery", "--set", "project=platform-p")
    code, out = skein(*bigquery)
    assert code == 1 and "platform's credentials" in out["error"]
    code, out = skein(*redshift, "--set", "s3_endpoint=https://s3.example.net")
    assert code == 1
    granted = ok("clients", "allow", str(client_id), "--redshift-role", role,
                 "--bigquery-project", "platform-p")  # fmt: skip
    assert {"kind": "redshift_role", "value": role} in granted["grants"]
    assert ok(*redshift)["type"] == "redshift"
    assert ok(*bigquery)["type"] == "bigquery"
    left = ok("clients", "disallow", str(client_id), "--bigquery-project", "platform-p")
    assert left["grants"] == [{"kind": "redshift_role", "value": role}]
    code, _ = skein(*bigquery)
    assert code == 1


def test_every_control_plane_change_is_audited_without_secrets() -> None:
    started = ok("audit", "ls", "--limit", "1")["entries"]
    since = started[0]["at"] if started else "2000-01-01T00:00:00+00:00"
    cid = ok("clients", "create", f"audited-{uuid.uuid4().hex[:6]}")["client_id"]
    token = ok("tokens", "create", str(cid))
    ok("tokens", "revoke", str(token["token_id"]))
    hook = ok("webhooks", "create", str(cid))
    password = f"pw-{uuid.uuid4().hex}"
    ok(
        "destinations", "set", str(cid), "postgres",
        "--dsn", f"postgresql://loader:{password}@127.0.0.1:5433/warehouse",
    )  # fmt: skip
    ok("clients", "set-limits", str(cid), "--tables", "50")
    ok("clients", "allow", str(cid), "--bigquery-project", "p-1")
    listed = ok("audit", "ls", "--client", str(cid))["entries"]
    actions = [e["action"] for e in reversed(listed)]
    assert actions == [
        "client.create",
        "token.create",
        "token.revoke",
        "webhook.create",
        "destination.set",
        "client.set_limits",
        "client.allow",
    ]
    assert all(e["actor"].startswith("os:") and e["client_id"] == cid for e in listed)
    text = orjson.dumps(listed).decode()
    for secret in (password, token["token"], hook["token"]):
        assert secret not in text
    assert token["token_prefix"] in text  # what was changed is named, by prefix
    # --since: nothing of this client before the test began is listed.
    newer = ok("audit", "ls", "--since", since)["entries"]
    assert {e["audit_id"] for e in listed} <= {e["audit_id"] for e in newer}
    code, out = skein("audit", "ls", "--since", "yesterday")
    assert code == 1 and "ISO 8601" in out["error"]


def test_secrets_rotate_moves_every_secret_to_the_newest_key_and_is_safe_twice(
    conn: control.Connection, client_id: int
) -> None:
    old = SharedSettings().secret_key.get_secret_value()  # the stack's key (a passphrase)
    new = "k2:" + base64.b64encode(os.urandom(32)).decode()
    password = f"pw-{uuid.uuid4().hex}"
    ok(
        "destinations", "set", str(client_id), "postgres",
        "--dsn", f"postgresql://loader:{password}@127.0.0.1:5433/warehouse",
    )  # fmt: skip
    forward = {"SKEIN_SECRET_KEY": f"legacy:{old},{new}"}
    back = {"SKEIN_SECRET_KEY": f"{new},legacy:{old}"}
    try:
        first = ok("secrets", "rotate", env=forward)
        assert first["key_id"] == "k2" and first["destinations"] >= 1
        again = ok("secrets", "rotate", env=forward)
        assert again["destinations"] == 0 and again["integrations"] == 0
        # Only the new key is needed now; the old one alone no longer opens them.
        assert revealed_secrets(conn, new, client_id) == {"password": password}
        with pytest.raises(crypto.SecretKeyError):
            destination_config.get_destination(conn, old, client_id, reveal=True)
        entries = ok("audit", "ls", "--limit", "5")["entries"]
        assert any(e["action"] == "secrets.rotate" and e["subject"] == "k2" for e in entries)
        assert new.split(":", 1)[1] not in orjson.dumps(entries).decode()
    finally:  # the rest of the stack keeps its key
        ok("secrets", "rotate", env=back)
    assert revealed_secrets(conn, old, client_id) == {"password": password}
