"""The control service's HTTP API on the running stack (127.0.0.1:8082): the control plane's
scenarios run through both the ``skein`` CLI and the API (one domain layer answers both), then
what only the API has: keys, tenant scoping, refusals, pages, metrics."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import closing
from typing import Any, Protocol

import httpx
import orjson
import pytest

from common import audit, db, destination_config, tokens
from services.control import accounts
from support.cli import ok, skein
from support.stack import wait_for
from support.tenants import new_tenants, push

CONTROL_URL = os.environ.get("SKEIN_TEST_CONTROL_URL", "http://127.0.0.1:8082")
CONTROL_METRICS_URL = os.environ.get("SKEIN_TEST_CONTROL_METRICS_URL", "http://127.0.0.1:9108")


def new_key(*args: str) -> dict[str, Any]:
    """``skein keys create ...``: {"key_id", "key"}."""
    created = ok("keys", "create", *args)
    assert set(created) == {"key_id", "key"}
    return created


@pytest.fixture(scope="module")
def operator() -> Iterator[httpx.Client]:
    key = new_key("--operator", "--name", "tests")["key"]
    assert key.startswith("sko_")
    with httpx.Client(
        base_url=CONTROL_URL, headers={"Authorization": f"Bearer {key}"}, timeout=30
    ) as http:
        yield http


def client_http(client_id: int) -> httpx.Client:
    key = new_key("--client", str(client_id))["key"]
    assert key.startswith("skc_")
    return httpx.Client(
        base_url=CONTROL_URL, headers={"Authorization": f"Bearer {key}"}, timeout=30
    )


def answer(r: httpx.Response, status: int = 200) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body: dict[str, Any] = r.json()
    return body


def refused(r: httpx.Response, status: int, code: str) -> str:
    """The error's message, after checking the status and the stable code."""
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["code"] == code, error
    return str(error["message"])


# --- the same scenarios through the CLI and the API -------------------------------------------


class Surface(Protocol):
    def create_client(self, name: str) -> dict[str, Any]: ...
    def create_token(self, client_id: int) -> dict[str, Any]: ...
    def tokens(self, client_id: int) -> list[dict[str, Any]]: ...
    def revoke_token(self, client_id: int, token_id: int) -> bool: ...
    def set_limits(self, client_id: int, **limits: int) -> dict[str, Any]: ...
    def set_destination(self, client_id: int, **spec: Any) -> dict[str, Any] | str: ...
    def destination(self, client_id: int) -> dict[str, Any]: ...


class Cli:
    def create_client(self, name: str) -> dict[str, Any]:
        return ok("clients", "create", name)

    def create_token(self, client_id: int) -> dict[str, Any]:
        return ok("tokens", "create", str(client_id))

    def tokens(self, client_id: int) -> list[dict[str, Any]]:
        return list(ok("tokens", "list", str(client_id))["tokens"])

    def revoke_token(self, client_id: int, token_id: int) -> bool:
        return bool(ok("tokens", "revoke", str(token_id))["revoked"])

    def set_limits(self, client_id: int, **limits: int) -> dict[str, Any]:
        option = {
            "rate_limit_rps": "rps",
            "bytes_per_s": "bytes-per-s",
            "max_concurrent_requests": "concurrent",
            "max_tables": "tables",
        }
        flags = [f"--{option[k]}={v}" for k, v in limits.items()]
        return dict(ok("clients", "set-limits", str(client_id), *flags)["limits"])

    def set_destination(self, client_id: int, **spec: Any) -> dict[str, Any] | str:
        args = ["destinations", "set", str(client_id), spec["type"]]
        if spec.get("dsn"):
            args += ["--dsn", spec["dsn"]]
        if spec.get("schema"):
            args += ["--schema", spec["schema"]]
        for k, v in spec.get("settings", {}).items():
            args += ["--set", f"{k}={v}"]
        code, out = skein(*args)
        return out if code == 0 else str(out["error"])

    def destination(self, client_id: int) -> dict[str, Any]:
        return ok("destinations", "show", str(client_id))


class Api:
    def __init__(self, http: httpx.Client) -> None:
        self.http = http

    def create_client(self, name: str) -> dict[str, Any]:
        return answer(self.http.post("/v1/clients", json={"name": name}), 201)

    def create_token(self, client_id: int) -> dict[str, Any]:
        return answer(self.http.post(f"/v1/clients/{client_id}/tokens"), 201)

    def tokens(self, client_id: int) -> list[dict[str, Any]]:
        return list(answer(self.http.get(f"/v1/clients/{client_id}/tokens"))["data"])

    def revoke_token(self, client_id: int, token_id: int) -> bool:
        return bool(
            answer(self.http.delete(f"/v1/clients/{client_id}/tokens/{token_id}"))["revoked"]
        )

    def set_limits(self, client_id: int, **limits: int) -> dict[str, Any]:
        return answer(self.http.patch(f"/v1/clients/{client_id}/limits", json=limits))

    def set_destination(self, client_id: int, **spec: Any) -> dict[str, Any] | str:
        r = self.http.put(f"/v1/clients/{client_id}/destination", json=spec)
        if r.status_code == 200:
            return dict(r.json())
        return refused(r, 400, "invalid_request")

    def destination(self, client_id: int) -> dict[str, Any]:
        return answer(self.http.get(f"/v1/clients/{client_id}/destination"))


@pytest.fixture(params=["cli", "api"])
def surface(request: pytest.FixtureRequest, operator: httpx.Client) -> Surface:
    return Cli() if request.param == "cli" else Api(operator)


def test_tokens_are_issued_listed_and_revoked(surface: Surface) -> None:
    client = surface.create_client(f"both-{uuid.uuid4().hex[:8]}")
    assert set(client) >= {"client_id", "name", "created_at"}
    cid = client["client_id"]
    token = surface.create_token(cid)
    assert token["token"].startswith("skn_") and token["client_id"] == cid
    listed = surface.tokens(cid)
    assert [t["token_id"] for t in listed] == [token["token_id"]]
    assert "token" not in listed[0] and listed[0]["revoked_at"] is None
    assert surface.revoke_token(cid, token["token_id"]) is True
    assert surface.revoke_token(cid, token["token_id"]) is False
    with closing(db.connect()) as conn:
        assert tokens.lookup_api_token(conn, token["token"]) is None


def test_limits_change_only_what_is_named(surface: Surface) -> None:
    cid = surface.create_client(f"limits-{uuid.uuid4().hex[:8]}")["client_id"]
    assert surface.set_limits(cid, max_tables=50)["max_tables"] == 50
    limits = surface.set_limits(cid, rate_limit_rps=7)
    assert limits["max_tables"] == 50 and limits["rate_limit_rps"] == 7


def test_a_destination_is_checked_by_the_same_rules(surface: Surface) -> None:
    cid = surface.create_client(f"dest-{uuid.uuid4().hex[:8]}")["client_id"]
    # the control database itself, a setting the type does not know, a private address
    for spec, complaint in (
        ({"type": "postgres", "dsn": "host=127.0.0.1 port=5432 dbname=skein"}, "control database"),
        (
            {"type": "postgres", "dsn": "host=127.0.0.1 port=5433", "settings": {"shcema": "x"}},
            "unknown setting 'shcema'",
        ),
        ({"type": "postgres", "dsn": "host=10.1.2.3 dbname=w"}, "private"),
    ):
        message = surface.set_destination(cid, **spec)
        assert isinstance(message, str) and complaint in message, message
    with closing(db.connect()) as conn:
        assert destination_config.get_destination(conn, "unused", cid) is None  # nothing stored
    stored = surface.set_destination(
        cid, type="postgres", dsn="host=127.0.0.1 port=5433 dbname=warehouse", schema="s1"
    )
    assert isinstance(stored, dict) and stored["config"]["schema"] == "s1"
    assert surface.destination(cid)["config"]["dsn_params"]["port"] == "5433"


# --- keys and the tenant boundary -------------------------------------------------------------


def test_a_key_is_needed_and_a_revoked_one_stops_working() -> None:
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic sko_x"}):
        r = httpx.get(f"{CONTROL_URL}/v1/clients", headers=headers)
        refused(r, 401, "unauthorized")
        assert r.headers["www-authenticate"] == "Bearer"
    created = new_key("--operator")
    bearer = {"Authorization": f"Bearer {created['key']}"}
    assert httpx.get(f"{CONTROL_URL}/v1/clients", headers=bearer).status_code == 200
    listed = ok("keys", "list")["keys"]
    mine = next(k for k in listed if k["key_id"] == created["key_id"])
    assert mine["kind"] == "operator" and "key" not in mine
    assert created["key"] not in orjson.dumps(listed).decode()
    assert ok("keys", "revoke", str(created["key_id"]))["revoked"] is True
    refused(httpx.get(f"{CONTROL_URL}/v1/clients", headers=bearer), 401, "unauthorized")


def test_a_client_key_sees_its_own_client_only(operator: httpx.Client) -> None:
    mine = answer(operator.post("/v1/clients", json={"name": "mine"}), 201)["client_id"]
    theirs = answer(operator.post("/v1/clients", json={"name": "theirs"}), 201)["client_id"]
    their_token = answer(operator.post(f"/v1/clients/{theirs}/tokens"), 201)
    with client_http(mine) as http:
        assert [c["client_id"] for c in answer(http.get("/v1/clients"))["data"]] == [mine]
        assert answer(http.post(f"/v1/clients/{mine}/tokens"), 201)["client_id"] == mine
        for method, path in (
            ("GET", f"/v1/clients/{theirs}"),
            ("GET", f"/v1/clients/{theirs}/tokens"),
            ("POST", f"/v1/clients/{theirs}/tokens"),
            ("GET", f"/v1/clients/{theirs}/destination"),
            ("DELETE", f"/v1/clients/{theirs}/tokens/{their_token['token_id']}"),
            # their token id under my client: no such token of mine
            ("DELETE", f"/v1/clients/{mine}/tokens/{their_token['token_id']}"),
            ("GET", f"/v1/status?client_id={theirs}"),
        ):
            refused(http.request(method, path), 404, "not_found")
        # operator-only: new clients, limits, keys
        refused(http.post("/v1/clients", json={"name": "x"}), 403, "forbidden")
        refused(http.patch(f"/v1/clients/{mine}/limits", json={"max_tables": 9}), 403, "forbidden")
        refused(http.get("/v1/keys"), 403, "forbidden")
    with closing(db.connect()) as conn:
        assert tokens.lookup_api_token(conn, their_token["token"]) is not None  # not revoked
        assert tokens.list_api_tokens(conn, theirs)[0]["revoked_at"] is None


def test_changes_through_the_api_are_attributed_to_its_key(operator: httpx.Client) -> None:
    created = new_key("--operator", "--name", "audited")
    with httpx.Client(
        base_url=CONTROL_URL, headers={"Authorization": f"Bearer {created['key']}"}
    ) as http:
        cid = answer(http.post("/v1/clients", json={"name": "audited"}), 201)["client_id"]
        answer(http.post(f"/v1/clients/{cid}/tokens"), 201)
    with closing(db.connect()) as conn:
        actions = {(e["actor"], e["action"]) for e in audit.entries(conn, client_id=cid)}
    actor = f"key:{created['key_id']}"
    assert {(actor, "client.create"), (actor, "token.create")} <= actions


# --- bad input changes nothing ----------------------------------------------------------------


def test_bad_input_is_a_json_4xx_and_changes_nothing(operator: httpx.Client) -> None:
    cid = answer(operator.post("/v1/clients", json={"name": "strict"}), 201)["client_id"]
    with closing(db.connect()) as conn:
        before = accounts.list_clients(conn)
    cases = [
        (operator.post("/v1/clients", json={"name": "x", "admin": True}), 422, "invalid_request"),
        (operator.post("/v1/clients", json={"name": 5}), 422, "invalid_request"),
        (operator.post("/v1/clients", content=b"{not json", headers=JSON), 422, "invalid_request"),
        (operator.patch(f"/v1/clients/{cid}/limits", json={"max_tables": "many"}), 422,
         "invalid_request"),
        (operator.patch(f"/v1/clients/{cid}/limits", json={"max_tables": -1}), 422,
         "invalid_request"),
        (operator.put(f"/v1/clients/{cid}/destination", json={"type": "mysql"}), 422,
         "invalid_request"),
        (operator.post("/v1/clients", content=b"{" + b" " * 300_000 + b"}", headers=JSON), 413,
         "payload_too_large"),
        (operator.get("/v1/clients/abc"), 422, "invalid_request"),
        (operator.get("/v1/clients/99999999999"), 404, "not_found"),
        (operator.get("/v1/nothing-here"), 404, "not_found"),
    ]  # fmt: skip
    for r, status, code in cases:
        refused(r, status, code)
    with closing(db.connect()) as conn:
        assert accounts.list_clients(conn) == before
        assert accounts.get_limits(conn, cid)["max_tables"] is None


JSON = {"Content-Type": "application/json"}


# --- pages, the spec, metrics -----------------------------------------------------------------


def test_lists_come_in_pages(operator: httpx.Client) -> None:
    cid = answer(operator.post("/v1/clients", json={"name": "paged"}), 201)["client_id"]
    issued = [answer(operator.post(f"/v1/clients/{cid}/tokens"), 201)["token_id"] for _ in range(5)]
    seen: list[int] = []
    after = 0
    while True:
        got = answer(operator.get(f"/v1/clients/{cid}/tokens", params={"limit": 2, "after": after}))
        assert len(got["data"]) <= 2
        seen += [t["token_id"] for t in got["data"]]
        if got["next_after"] is None:
            break
        after = got["next_after"]
    assert seen == issued
    clients = answer(operator.get("/v1/clients", params={"limit": 1, "after": cid - 1}))
    assert [c["client_id"] for c in clients["data"]] == [cid]


def test_the_spec_health_and_metrics() -> None:
    spec = httpx.get(f"{CONTROL_URL}/openapi.json").json()
    assert "/v1/clients/{client_id}/destination" in spec["paths"]
    assert httpx.get(f"{CONTROL_URL}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{CONTROL_METRICS_URL}/readyz").json()["checks"] == {"control_db": True}
    metrics = httpx.get(f"{CONTROL_METRICS_URL}/metrics").text
    assert 'skein_control_requests_total{route="/v1/clients"' in metrics
    refused(httpx.get(f"{CONTROL_URL}/metrics"), 404, "not_found")


def test_batches_are_listed_and_acted_on_within_the_client(operator: httpx.Client) -> None:
    tenant, other = new_tenants(2, prefix="api_batches")
    with httpx.Client() as gate:
        for table in ("orders", "refunds", "users"):
            push(tenant, table, [{"id": i} for i in range(3)], http=gate)
    with client_http(tenant.client_id) as http:
        listed = wait_for(
            lambda: answer(http.get("/v1/batches", params={"state": "loaded"}))["data"],
            timeout=60,
            what="the batch to load",
        )
        assert {b["client_id"] for b in listed} == {tenant.client_id}
        batch = listed[0]["batch_id"]
        message = refused(http.post(f"/v1/batches/{batch}/retry"), 409, "conflict")
        assert "not dead" in message
        refused(http.get("/v1/batches/stats"), 403, "forbidden")
        refused(http.get("/v1/batches", params={"client_id": other.client_id}), 404, "not_found")
        # status comes in pages of tables too
        wait_for(
            lambda: len(answer(http.get("/v1/status"))["tables"]) == 3, timeout=60, what="3 tables"
        )
        first = answer(http.get("/v1/status", params={"limit": 2}))
        assert [t["table_name"] for t in first["tables"]] == ["orders", "refunds"]
        cursor = first["next_after"]
        assert cursor == {"client_id": tenant.client_id, "table_name": "refunds"}
        params = {"limit": 2, "after_client": cursor["client_id"], "after_table": "refunds"}
        rest = answer(http.get("/v1/status", params=params))
        assert [t["table_name"] for t in rest["tables"]] == ["users"]
        assert rest["next_after"] is None
    with client_http(other.client_id) as them:
        assert answer(them.get("/v1/batches"))["data"] == []
        assert answer(them.get("/v1/status"))["tables"] == []
        refused(them.post(f"/v1/batches/{batch}/skip"), 404, "not_found")
    assert set(answer(operator.get("/v1/batches/stats"))) >= {"open", "live_leases"}


def test_concurrent_edits_end_in_one_of_the_writes(operator: httpx.Client) -> None:
    """Eight PUTs of a destination at once: each answers 200 and the stored one is exactly one
    of them (the last write wins; no mix of two)."""
    from concurrent.futures import ThreadPoolExecutor

    cid = answer(operator.post("/v1/clients", json={"name": "racy"}), 201)["client_id"]

    def put(n: int) -> int:
        spec = {
            "type": "postgres",
            "dsn": f"host=127.0.0.1 port=5433 dbname=warehouse user=u{n}",
            "schema": f"s{n}",
        }
        return operator.put(f"/v1/clients/{cid}/destination", json=spec).status_code

    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(put, range(8))) == [200] * 8
    stored = answer(operator.get(f"/v1/clients/{cid}/destination"))["config"]
    n = stored["schema"][1:]
    assert stored["dsn_params"]["user"] == f"u{n}"


def test_webhooks_through_the_cli_and_the_api_alike(
    surface: Surface, operator: httpx.Client
) -> None:
    cid = surface.create_client(f"hooks-{uuid.uuid4().hex[:8]}")["client_id"]
    if isinstance(surface, Cli):
        made = ok("webhooks", "create", str(cid), "--table", "events", "--key", "id")
        listed = ok("webhooks", "list", str(cid))["webhooks"]
        revoked = ok("webhooks", "revoke", str(made["webhook_id"]))["revoked"]
    else:
        body = {"table_name": "events", "key_field": "id"}
        made = answer(operator.post(f"/v1/clients/{cid}/webhooks", json=body), 201)
        listed = answer(operator.get(f"/v1/clients/{cid}/webhooks"))["data"]
        url = f"/v1/clients/{cid}/webhooks/{made['webhook_id']}"
        revoked = answer(operator.delete(url))["revoked"]
    assert made["url_path"] == f"/v1/clients/{cid}/token/{made['token']}"
    assert [(w["table_name"], w["key_field"]) for w in listed] == [("events", "id")]
    assert revoked is True
    with closing(db.connect()) as conn:
        assert tokens.lookup_webhook(conn, made["token"]) is None


def test_platform_grants_decide_what_a_destination_may_use(operator: httpx.Client) -> None:
    """An operator allows a client the platform's BigQuery project; the client's key then sets a
    destination on it without credentials; once disallowed, the same is refused. The audit log
    names the key of each change; a client key reads its own entries only."""
    cid = answer(operator.post("/v1/clients", json={"name": "granted"}), 201)["client_id"]
    grant = {"kind": "bigquery_project", "value": f"platform-{uuid.uuid4().hex[:6]}"}
    bigquery = {"type": "bigquery", "settings": {"project": grant["value"]}}
    with client_http(cid) as http:
        refused(http.post(f"/v1/clients/{cid}/grants", json=grant), 403, "forbidden")
        assert "platform's credentials" in refused(
            http.put(f"/v1/clients/{cid}/destination", json=bigquery), 400, "invalid_request"
        )
        allowed = answer(operator.post(f"/v1/clients/{cid}/grants", json=grant))["grants"]
        assert allowed == [grant]
        assert answer(http.get(f"/v1/clients/{cid}/grants"))["grants"] == [grant]
        answer(http.put(f"/v1/clients/{cid}/destination", json=bigquery))
        gone = answer(operator.delete(f"/v1/clients/{cid}/grants", params=grant))["grants"]
        assert gone == []
        refused(http.put(f"/v1/clients/{cid}/destination", json=bigquery), 400, "invalid_request")
        own_entries = answer(http.get("/v1/audit"))["entries"]
        assert own_entries and {e["client_id"] for e in own_entries} == {cid}
        refused(http.get("/v1/audit", params={"client_id": 1}), 404, "not_found")
    actions = [
        e["action"] for e in answer(operator.get("/v1/audit", params={"client_id": cid}))["entries"]
    ]
    assert actions[:3] == ["client.disallow", "destination.set", "client.allow"]
