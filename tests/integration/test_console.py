"""The web console's doors on the running control service (127.0.0.1:8082), over plain HTTP:
sessions (cookie flags, idle end, a removed user's end), CSRF, scoping, and the destination
form (a refusal shown beside its field and nothing stored; secrets never read back)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from contextlib import closing, contextmanager
from typing import Any

import httpx
import pytest

from common import db, tokens
from support.cli import ok
from support.warehouse import DEMO_WAREHOUSE

CONSOLE = "http://127.0.0.1:8082"
PASSWORD = "console-it-" + uuid.uuid4().hex


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, html[:500]
    return found.group(1)


def new_user(*role: str) -> str:
    name = f"it-{uuid.uuid4().hex[:10]}"
    ok("users", "create", name, *role, "--password-env", "PW", env={"PW": PASSWORD})
    return name


@contextmanager
def logged_in(name: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=CONSOLE) as http:
        token = csrf_of(http.get("/").text)
        r = http.post("/login", data={"name": name, "password": PASSWORD, "csrf": token})
        assert r.status_code == 303, r.text
        assert http.get("/").status_code == 200
        yield http


@pytest.fixture(scope="module")
def operator() -> Iterator[httpx.Client]:
    with logged_in(new_user("--operator")) as http:
        yield http


def test_pages_say_who_may_frame_or_script_them() -> None:
    r = httpx.get(CONSOLE + "/")
    assert r.status_code == 200
    assert "Log in to Skein" in r.text
    policy = r.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert "unsafe-inline" not in policy
    assert r.headers["cache-control"] == "no-store"
    htmx = re.search(r'src="(/static/htmx-[0-9.]+\.min\.js)"', r.text)
    assert htmx and httpx.get(CONSOLE + htmx.group(1)).status_code == 200  # served locally


def test_a_session_cookie_is_locked_down_and_secure_behind_https() -> None:
    name = new_user("--operator")
    with httpx.Client(base_url=CONSOLE) as http:
        token = csrf_of(http.get("/").text)
        r = http.post("/login", data={"name": name, "password": PASSWORD, "csrf": token})
        cookie = r.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie
        assert "Secure" not in cookie  # plain HTTP on loopback
    with httpx.Client(base_url=CONSOLE, headers={"X-Forwarded-Proto": "https"}) as http:
        form = http.get("/")
        assert "Secure" in form.headers["set-cookie"]  # the login form's token cookie too
        # (a browser sends a Secure cookie back over HTTPS: given here by hand over HTTP)
        login_cookie = form.headers["set-cookie"].split(";")[0]
        r = http.post(
            "/login",
            data={"name": name, "password": PASSWORD, "csrf": csrf_of(form.text)},
            headers={"Cookie": login_cookie},
        )
        assert r.status_code == 303
        assert "Secure" in r.headers["set-cookie"]


def test_a_login_form_without_its_token_is_refused() -> None:
    name = new_user("--operator")
    with httpx.Client(base_url=CONSOLE) as http:
        http.get("/")
        r = http.post("/login", data={"name": name, "password": PASSWORD, "csrf": "x" * 43})
        assert r.status_code == 403
        assert "skein_session" not in r.headers.get("set-cookie", "")


def test_an_idle_session_ends_and_a_removed_users_sessions_end_at_once() -> None:
    name = new_user("--operator")
    with logged_in(name) as http:
        with closing(db.connect()) as conn, conn, conn.cursor() as cur:
            cur.execute(
                "UPDATE console_sessions s SET last_seen_at = now() - interval '2 hours'"
                " FROM console_users u WHERE u.user_id = s.user_id AND u.name = %s",
                (name,),
            )
        r = http.get("/clients")
        assert r.status_code == 303 and r.headers["location"] == "/"
    other = new_user("--operator")
    with logged_in(other) as http:
        assert http.get("/clients").status_code == 200
        assert ok("users", "remove", other)["removed"] is True
        assert http.get("/clients").status_code == 303


def test_a_change_without_the_sessions_token_is_refused_and_changes_nothing(
    operator: httpx.Client,
) -> None:
    name = f"no-csrf-{uuid.uuid4().hex[:8]}"
    r = operator.post("/clients", data={"name": name})
    assert r.status_code == 403
    assert "expired" in r.text
    r = operator.post("/clients", data={"name": name, "csrf": "y" * 43})
    assert r.status_code == 403
    assert all(c["name"] != name for c in ok("clients", "list")["clients"])


def test_a_client_user_meets_other_clients_as_not_found() -> None:
    mine = ok("clients", "create", "console-it-mine")["client_id"]
    other = ok("clients", "create", "console-it-other")["client_id"]
    with logged_in(new_user("--client", str(mine))) as http:
        token = csrf_of(http.get(f"/clients/{mine}").text)
        assert http.get(f"/clients/{mine}/access").status_code == 200
        for path in ("", "/destination", "/access", "/integrations", "/tables"):
            assert http.get(f"/clients/{other}{path}").status_code == 404, path
        for path in (f"/clients/{other}/tokens", f"/clients/{other}/webhooks", "/clients"):
            r = http.post(path, data={"csrf": token, "name": "x", "table_name": "t"})
            assert r.status_code == 404, path
        assert ok("tokens", "list", str(other))["tokens"] == []


def test_the_destination_form_refuses_in_place_and_never_shows_a_secret(
    operator: httpx.Client,
) -> None:
    client_id = ok("clients", "create", "console-it-dest")["client_id"]
    page = operator.get(f"/clients/{client_id}/destination")
    token = csrf_of(page.text)
    form = {"csrf": token, "type": "postgres", "set.schema": "x"}
    # the control database: refused by the network policy, shown beside the connection field
    r = operator.post(
        f"/clients/{client_id}/destination",
        data={**form, "dsn": "host=127.0.0.1 port=5432 dbname=skein user=postgres"},
    )
    assert r.status_code == 400
    assert re.search(r'id="e-dsn"[^>]*>[^<]*control database', r.text), r.text[-3000:]
    code, shown = _show(client_id)
    assert code == 1 and "no destination" in shown["error"]
    # stored; the secret is never in a page, and a blank one keeps it
    secret = "pw-" + uuid.uuid4().hex
    dsn = " ".join(f"{k}={v}" for k, v in DEMO_WAREHOUSE.items())
    r = operator.post(
        f"/clients/{client_id}/destination",
        data={**form, "dsn": dsn, "secret.password": secret},
    )
    assert r.status_code == 303
    page = operator.get(f"/clients/{client_id}/destination")
    assert secret not in page.text and "stored, leave blank to keep it" in page.text
    r = operator.post(f"/clients/{client_id}/destination", data={**form, "dsn": dsn})
    assert r.status_code == 303
    assert _show(client_id)[1]["secrets_set"] == ["password"]


def _show(client_id: int) -> tuple[int, dict[str, Any]]:
    from support.cli import skein

    return skein("destinations", "show", str(client_id))


def test_an_integrations_schedule_and_streams_are_set_from_its_page(
    operator: httpx.Client,
) -> None:
    from datetime import UTC, datetime, timedelta

    from common.settings import SharedSettings
    from services.extractor import catalog, integrations

    client_id = ok("clients", "create", "console-it-integration")["client_id"]
    discovered = {
        "streams": [
            {
                "tap_stream_id": s,
                "stream": s,
                "schema": {"properties": {"id": {"type": "integer"}}},
                "metadata": [{"breadcrumb": [], "metadata": {}}],
            }
            for s in ("orders", "users", "events")
        ]
    }
    name = f"it-{uuid.uuid4().hex[:8]}"
    with closing(db.connect()) as conn:
        integrations.create(
            conn,
            SharedSettings().secret_key.get_secret_value(),
            client_id=client_id,
            name=name,
            tap_package="tap-example",
            tap_version="1.0.0",
            tap_executable="tap-example",
            config={"password": "hunter2-secret"},
            secret_keys=["password"],
            catalog=catalog.select(discovered, ["orders"]),
            schedule="0 0 1 1 *",
            next_run_at=datetime.now(UTC) + timedelta(days=30),
        )
    page = operator.get(f"/clients/{client_id}/integrations/{name}")
    assert page.status_code == 200
    assert 'value="users"' in page.text and "hunter2" not in page.text
    path = f"/clients/{client_id}/integrations/{name}/settings"
    form = {"csrf": csrf_of(page.text), "schedule": "nonsense"}
    r = operator.post(path, data={**form, "streams": ["users"]})
    assert r.status_code == 400  # a bad cron: nothing changes
    assert ok("integrations", "ls", str(client_id))["integrations"][0]["schedule"] == "0 0 1 1 *"
    r = operator.post(path, data={**form, "schedule": "15 * * * *", "streams": ["users", "events"]})
    assert r.status_code == 200 and "Saved" in r.text
    found = ok("integrations", "ls", str(client_id))["integrations"][0]
    assert found["schedule"] == "15 * * * *"
    assert [s["stream"] for s in found["streams"]] == ["users", "events"]


def test_a_part_refreshing_after_the_session_ended_sends_the_browser_to_the_login() -> None:
    r = httpx.get(CONSOLE + "/clients/1/tables", headers={"HX-Request": "true"})
    assert r.status_code == 204 and r.headers["hx-redirect"] == "/"
    r = httpx.get(CONSOLE + "/clients/1/tables")
    assert r.status_code == 303 and r.headers["location"] == "/"


def test_revoke_buttons_end_a_token_and_a_webhook_of_ones_own_client_only() -> None:
    mine = ok("clients", "create", "console-it-revoke")["client_id"]
    other = ok("clients", "create", "console-it-revoke-other")["client_id"]
    token = ok("tokens", "create", str(mine))
    hook = ok("webhooks", "create", str(mine), "--table", "events")
    theirs = ok("tokens", "create", str(other))
    with logged_in(new_user("--client", str(mine))) as http:
        csrf = csrf_of(http.get(f"/clients/{mine}/access").text)
        r = http.post(f"/clients/{other}/tokens/{theirs['token_id']}/revoke", data={"csrf": csrf})
        assert r.status_code == 404
        r = http.post(f"/clients/{mine}/keys/{token['token_id']}/revoke", data={"csrf": csrf})
        assert r.status_code == 404
        for kind, item in (("tokens", token["token_id"]), ("webhooks", hook["webhook_id"])):
            r = http.post(f"/clients/{mine}/{kind}/{item}/revoke", data={"csrf": csrf})
            assert r.status_code == 303 and r.headers["location"] == f"/clients/{mine}/access"
    with closing(db.connect()) as conn:
        assert tokens.lookup_webhook(conn, hook["token"]) is None
    assert [t["revoked_at"] is not None for t in ok("tokens", "list", str(mine))["tokens"]] == [
        True
    ]
    assert [t["revoked_at"] for t in ok("tokens", "list", str(other))["tokens"]] == [None]
