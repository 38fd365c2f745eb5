"""Tenant isolation on the running stack: one client's token never writes as another client,
each destination holds only its own client's rows after a mixed load, and no token or password
reaches any service log."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from typing import Any

import httpx
import orjson

from common import db
from common.settings import SharedSettings
from services.control import destinations, webhooks
from services.spool import operations
from support.gate import TopicWatch, client_keys, push_record
from support.stack import GATE, ROOT, wait_for
from support.tenants import Tenant, new_tenant
from support.warehouse import DEMO_WAREHOUSE, table_rows, warehouse_role

FORBIDDEN = {
    "status": "ERROR",
    "error": "Forbidden",
    "errors": {"error": "Access token is not associated with this client."},
}
NOT_AUTHORIZED = {"message": "Not Authorized"}


def webhook(tenant: Tenant, table: str, key: str | None = None) -> dict[str, Any]:
    with closing(db.connect()) as conn:
        return webhooks.create_webhook(conn, tenant.client_id, table_name=table, key_field=key)


def post(path: str, body: Any, headers: dict[str, str] | None = None) -> httpx.Response:
    """POST as a real client does: a 503 (Kafka or control DB briefly away) is retried."""
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    headers = headers or {"Content-Type": "application/json"}
    deadline = time.monotonic() + 90
    while True:
        r = httpx.post(f"{GATE}{path}", content=content, headers=headers, timeout=30)
        if r.status_code != 503 or time.monotonic() > deadline:
            return r
        time.sleep(float(r.headers.get("retry-after", "1")))


def test_a_token_cannot_push_as_another_client() -> None:
    a, b = new_tenant("iso-a"), new_tenant("iso-b")
    watch = TopicWatch()
    try:
        table = f"accounts_{uuid.uuid4().hex[:6]}"
        as_b = [push_record(b.client_id, table, i, {"id": i}) for i in range(3)]
        refused = [
            post("/v2/import/push", as_b, a.headers()),
            # One foreign record among the client's own refuses the whole request.
            post(
                "/v2/import/push",
                [push_record(a.client_id, table, 1, {"id": 1}), as_b[0]],
                a.headers(),
            ),
            post("/v2/import/validate", as_b, a.headers()),
        ]
        for r in refused:
            assert (r.status_code, r.json()) == (403, FORBIDDEN)
        own = post("/v2/import/push", as_b, b.headers())
        assert own.status_code == 202, own.text
        appended = watch.appended()
    finally:
        watch.close()
    assert client_keys(appended, a.client_id) == []
    ids = {r.headers["x-request-id"] for r in refused}
    assert [m for m in appended if m.request_id in ids] == []
    b_messages = [m for m in appended if m.key == f"{b.client_id}/{table}".encode()]
    assert {m.request_id for m in b_messages} == {own.headers["x-request-id"]}


def test_a_webhook_token_works_only_under_its_own_clients_path() -> None:
    a, b = new_tenant("hook-a"), new_tenant("hook-b")
    hook_a, hook_b = webhook(a, "events"), webhook(b, "events")
    watch = TopicWatch()
    try:
        attempts = {
            "A's webhook token under B's path": (b.client_id, hook_a["token"]),
            "B's webhook token under A's path": (a.client_id, hook_b["token"]),
            "A's API token as a webhook token": (a.client_id, a.token),
            "A's API token under B's path": (b.client_id, a.token),
        }
        refused = {}
        for what, (client_id, token) in attempts.items():
            path = f"/v1/clients/{client_id}/token/{token}"
            refused[what] = post(path, {"id": 1}, a.headers())
            assert (refused[what].status_code, refused[what].json()) == (401, NOT_AUTHORIZED), what
        ok = post(hook_a["url_path"], {"id": 1})
        assert ok.status_code == 202, ok.text
        appended = watch.appended()
    finally:
        watch.close()
    assert client_keys(appended, b.client_id) == []
    ids = {r.headers["x-request-id"] for r in refused.values()}
    assert [m for m in appended if m.request_id in ids] == []
    assert [m.request_id for m in appended if m.key.startswith(f"{a.client_id}/".encode())] == [
        ok.headers["x-request-id"]
    ]


def load_as(tenant: Tenant, hook_path: str, others: list[Tenant]) -> list[int]:
    """One client's share of the mixed load; returns the statuses of its forbidden attempts."""
    owner = tenant.client_id
    for k in range(10):
        batch = {
            "table_name": "orders",
            "key_names": ["id"],
            "schema": {"properties": {"id": {"type": "integer"}, "owner": {"type": "integer"}}},
            "messages": [
                {"action": "upsert", "sequence": 1 + i, "data": {"id": i, "owner": owner}}
                for i in range(k * 20, k * 20 + 20)
            ],
        }
        r = post("/v2/import/batch", batch, tenant.headers())
        assert r.status_code == 202, r.text
        events = [
            push_record(owner, "events", k * 20 + i, {"owner": owner, "n": k * 20 + i})
            for i in range(20)
        ]
        r = post("/v2/import/push", events, tenant.headers())
        assert r.status_code == 202, r.text
        if k % 2 == 0:
            objects = [{"owner": owner, "i": k * 10 + i} for i in range(10)]
            r = post(hook_path, objects)
            assert r.status_code == 202, r.text
    forbidden = []
    for other in others:  # the same tables, written as another client: refused
        r = post(
            "/v2/import/push", [push_record(other.client_id, "events", 9, {})], tenant.headers()
        )
        forbidden.append(r.status_code)
    return forbidden


def test_after_a_mixed_load_each_destination_holds_only_its_own_rows() -> None:
    tenants = [new_tenant(f"mix{k}", DEMO_WAREHOUSE) for k in range(3)]
    hooks = [webhook(t, "hooks")["url_path"] for t in tenants]
    with ThreadPoolExecutor(len(tenants)) as pool:
        outcomes = list(
            pool.map(
                lambda k: load_as(tenants[k], hooks[k], tenants[:k] + tenants[k + 1 :]),
                range(len(tenants)),
            )
        )
    assert outcomes == [[403, 403]] * 3

    expected = {"orders": 200, "events": 200, "hooks": 50}
    for tenant in tenants:
        schema = tenant.schema
        assert schema
        for table, count in expected.items():
            wait_for(
                lambda schema=schema, table=table, count=count: (
                    len(table_rows(schema, table, ["owner"])) >= count
                ),
                timeout=240,
                interval=1,
                what=f"{count} rows in {schema}.{table}",
            )
        orders = table_rows(schema, "orders", ["id", "owner"])
        assert orders == [(i, tenant.client_id) for i in range(200)]
        events = table_rows(schema, "events", ["n", "owner"])
        assert sorted(events) == [(n, tenant.client_id) for n in range(200)]
        hook_rows = table_rows(schema, "hooks", ["i", "owner"])
        assert sorted(hook_rows) == [
            (i, tenant.client_id) for i in range(0, 100) if i // 10 % 2 == 0
        ]
        owners = Counter(owner for t in expected for (owner,) in table_rows(schema, t, ["owner"]))
        assert owners == {tenant.client_id: sum(expected.values())}


def log_text() -> bytes:
    """Every service log of the local stack (.run/logs, Kafka's and Postgres's included)."""
    return b"\n".join(
        path.read_bytes() for path in sorted((ROOT / ".run" / "logs").rglob("*")) if path.is_file()
    )


def test_no_token_or_password_reaches_any_log() -> None:
    password = f"pw-{uuid.uuid4().hex}"
    tenant = new_tenant("logscan", DEMO_WAREHOUSE, password=password)
    hook = webhook(tenant, "logscan_hooks", key="id")
    # A second client whose warehouse refuses connections: the loader's failure path runs with
    # its password in hand.
    failing_password = f"pw-{uuid.uuid4().hex}"
    failing = new_tenant("logfail")
    settings = SharedSettings()
    unreachable = {**DEMO_WAREHOUSE, "port": "1"}
    with closing(db.connect()) as conn:
        destinations.set_destination(
            conn,
            settings.secret_key.get_secret_value(),
            failing.client_id,
            "postgres",
            {"dsn_params": unreachable, "schema": "logfail"},
            {"password": failing_password},
        )

    body = {
        "table_name": "logscan",
        "key_names": ["id"],
        "schema": {"properties": {"id": {"type": "integer"}}},
        "messages": [{"action": "upsert", "sequence": 1, "data": {"id": 1}}],
    }
    wrong_ways = {
        "Basic": f"Basic {tenant.token}",
        "no scheme": tenant.token,
        "altered": f"Bearer {tenant.token}x",
        "twice": f"Bearer {tenant.token} {tenant.token}",
    }
    answers = [post("/v2/import/batch", body, tenant.headers())]
    for value in wrong_ways.values():
        answers.append(
            post(
                "/v2/import/batch",
                body,
                {"Authorization": value, "Content-Type": "application/json"},
            )
        )
    answers.append(post(f"/v2/import/batch?token={tenant.token}", body, tenant.headers()))
    answers.append(post(hook["url_path"], {"id": 2}))
    answers.append(post(f"/v1/clients/{failing.client_id}/token/{hook['token']}", {"id": 3}))
    answers.append(post(hook["url_path"] + "x", {"id": 4}))
    answers.append(post("/v2/import/batch", body, failing.headers()))
    assert [r.status_code for r in answers] == [202, 401, 401, 401, 401, 202, 202, 401, 401, 202]

    assert tenant.schema
    wait_for(
        lambda: (
            len(table_rows(tenant.schema, "logscan", ["id"])) == 1
            and len(table_rows(tenant.schema, "logscan_hooks", ["id"])) == 1
        ),
        timeout=240,
        interval=1,
        what="the rows loaded with the password-holding destination",
    )

    def failed_batch() -> list[dict[str, Any]]:
        with closing(db.connect()) as conn:
            found = operations.list_batches(conn, client_id=failing.client_id)
        return [b for b in found if b["last_error"]]

    failures = wait_for(failed_batch, timeout=240, interval=1, what="the loader's failed attempt")
    assert failing_password not in orjson.dumps(failures).decode()
    with closing(db.connect()) as conn:  # let its batch load now (not waited for)
        destinations.set_destination(
            conn,
            settings.secret_key.get_secret_value(),
            failing.client_id,
            "postgres",
            {
                "dsn_params": {**DEMO_WAREHOUSE, "user": warehouse_role(failing_password)},
                "schema": f"logfail_{failing.client_id}",
            },
            {"password": failing_password},
        )

    ids = [r.headers["x-request-id"].encode() for r in answers]

    def logs_with_every_request() -> bytes:
        text = log_text()
        return text if all(i in text for i in ids) else b""

    text = wait_for(
        logs_with_every_request, timeout=30, what="the access-log lines of every request"
    )
    secrets = {
        "API token": tenant.token,
        "webhook token": hook["token"],
        "other API token": failing.token,
        "destination password": password,
        "failing destination password": failing_password,
        "SKEIN_SPOOL_TOKEN": settings.spool_token.get_secret_value(),
        "SKEIN_S3_SECRET_KEY": settings.s3_secret_key.get_secret_value(),
        "SKEIN_SECRET_KEY": settings.secret_key.get_secret_value(),
    }
    found = [what for what, value in secrets.items() if value.encode() in text]
    assert found == [], f"secrets in .run/logs: {found}"
    assert b"/v1/clients/{client_id}/token/{webhook_token}" in text  # the scan saw the requests
