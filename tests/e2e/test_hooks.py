"""Notification hooks on the local stack: records through the gate, loaded, and the client's
hook hears each load once it answers, signed, with nothing lost to the failures before."""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import orjson
import pytest

from support.cli import skein
from support.stack import wait_for
from support.tenants import Tenant, batch_body, new_tenant
from support.warehouse import DEMO_WAREHOUSE

pytestmark = pytest.mark.e2e

GATE = "http://127.0.0.1:8080"
RECEIVER_PORT = 8791  # in the local stack's allowed hook-receiver ports (8790-8799)
SECRET = "e2e-hook-secret-" + uuid.uuid4().hex


class Receiver:
    """An HTTP receiver whose first ``failures`` requests answer 503; keeps every request."""

    def __init__(self, failures: int, port: int = RECEIVER_PORT) -> None:
        self.failures = failures
        self.requests: list[tuple[int, dict[str, str], bytes]] = []  # (status, headers, body)
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver.lock:
                    status = 503 if receiver.failures > 0 else 200
                    receiver.failures -= status == 503
                    receiver.requests.append((status, dict(self.headers.items()), body))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    got = Receiver(failures=3)
    try:
        yield got
    finally:
        got.close()


def push(tenant: Tenant, table: str, ids: range | list[dict[str, Any]]) -> str:
    records = [{"id": i} for i in ids] if isinstance(ids, range) else ids
    r = httpx.post(
        f"{GATE}/v2/import/batch",
        json=batch_body(table, records),
        headers={"Authorization": f"Bearer {tenant.token}"},
        timeout=30,
    )
    assert r.status_code == 202, r.text
    return r.headers["x-request-id"]


def valid_signature(headers: dict[str, str], body: bytes) -> bool:
    """The receiver's check, written from the documented header format."""
    parts = dict(p.split("=", 1) for p in headers["Skein-Signature"].split(","))
    expected = hmac.new(
        SECRET.encode(), parts["t"].encode() + b"." + body, hashlib.sha256
    ).hexdigest()
    return hmac.compare_digest(expected, parts["v1"]) and abs(time.time() - int(parts["t"])) < 300


def test_a_hook_that_fails_three_times_then_answers_gets_every_load_signed_once(
    receiver: Receiver,
) -> None:
    tenant = new_tenant("e2e_hooks", DEMO_WAREHOUSE)
    client_id = str(tenant.client_id)
    code, hook = skein(
        "hooks",
        "create",
        client_id,
        f"http://127.0.0.1:{RECEIVER_PORT}/skein",
        "--events",
        "load.completed,batch.dead",
        "--secret-env",
        "E2E_HOOK_SECRET",
        env={"E2E_HOOK_SECRET": SECRET},
    )
    assert code == 0, hook
    assert "secret" not in hook  # a given secret is never echoed

    tables = {"orders": range(1, 41), "customers": range(1, 26), "events": range(1, 11)}
    request_ids = {table: push(tenant, table, ids) for table, ids in tables.items()}

    def all_delivered() -> list[dict[str, Any]] | None:
        code, listed = skein("hooks", "deliveries", client_id)
        assert code == 0, listed
        rows = listed["deliveries"]
        return (
            rows
            if len(rows) >= len(tables) and {r["state"] for r in rows} == {"delivered"}
            else None
        )

    deliveries = wait_for(
        all_delivered, timeout=120, interval=1.0, what="every hook delivery delivered"
    )

    with receiver.lock:
        seen = list(receiver.requests)
    assert [s for s, _, _ in seen].count(503) == 3
    assert all(valid_signature(h, body) for _, h, body in seen)
    delivered = [(h, orjson.loads(body)) for status, h, body in seen if status == 200]
    # Each event once (none lost to the failures, none sent twice after its 200).
    event_ids = [event["id"] for _, event in delivered]
    assert sorted(event_ids) == sorted(d["event_id"] for d in deliveries)
    assert len(set(event_ids)) == len(event_ids)
    for headers, event in delivered:
        assert headers["Idempotency-Key"] == headers["Skein-Event-Id"] == event["id"]
        assert event["type"] == "load.completed" and event["client_id"] == tenant.client_id
    # Failed attempts were retried: the three 503s are on deliveries tried more than once.
    assert sum(d["attempts"] - 1 for d in deliveries) == 3

    # Stitch's post-load body: every table's rows, with the batches and requests behind them.
    rows: dict[str, int] = {}
    for _, event in delivered:
        data = event["data"]
        assert data["version"] == 1 and data["batch_ids"]
        (table,) = data["tables"]
        assert table["num_rows_rejected"] == 0
        rows[table["destination_table_name"]] = (
            rows.get(table["destination_table_name"], 0) + table["num_rows"]
        )
        assert request_ids[data["table_name"]] in data["request_ids"]
    assert rows == {table: len(ids) for table, ids in tables.items()}


def test_a_hook_url_the_network_policy_refuses_is_not_stored() -> None:
    tenant = new_tenant("e2e_hooks", DEMO_WAREHOUSE)
    client_id = str(tenant.client_id)
    for url in (
        "http://169.254.169.254/latest/meta-data",  # cloud metadata
        "http://127.0.0.1:8081/v1/stats",  # the spool: the platform's own
        "ftp://example.com/hook",
    ):
        code, out = skein("hooks", "create", client_id, url, "--events", "load.completed")
        assert code != 0 and "error" in out, out
    code, out = skein(
        "hooks",
        "create",
        client_id,
        f"http://127.0.0.1:{RECEIVER_PORT}/x",
        "--events",
        "load.completed,nope",
    )
    assert code != 0 and "unknown event nope" in out["error"]
    code, listed = skein("hooks", "list", client_id)
    assert code == 0 and listed["hooks"] == []


def test_schema_changes_and_rejected_records_are_logged_kept_and_heard() -> None:
    tenant = new_tenant("e2e_hooks", DEMO_WAREHOUSE)
    client_id = str(tenant.client_id)
    receiver = Receiver(failures=0, port=RECEIVER_PORT + 1)
    try:
        code, _ = skein(
            "hooks",
            "create",
            client_id,
            f"http://127.0.0.1:{RECEIVER_PORT + 1}/",
            "--events",
            "schema.changed,records.rejected",
            "--secret-env",
            "E2E_HOOK_SECRET",
            env={"E2E_HOOK_SECRET": SECRET},
        )
        assert code == 0
        push(tenant, "orders", [{"id": 1, "v": "a"}])
        wait_for(
            lambda: skein("schema", "log", client_id)[1]["changes"],
            timeout=60,
            what="the table's creation in the schema log",
        )
        push(
            tenant,
            "orders",
            [{"id": 2, "v": "b", "w": 1.5}, {"id": 3, "v": 7}, {"id": 4, "v": "x\u0000y"}],
        )

        def logged() -> list[dict[str, Any]] | None:
            changes = skein("schema", "log", client_id, "--table", "orders")[1]["changes"]
            return changes if len(changes) >= 3 else None

        changes = wait_for(logged, timeout=60, what="the second load's changes")
        kinds = {(c["change"], c["column_name"]) for c in changes}
        assert ("table_created", None) in kinds and ("column_added", "w") in kinds
        split = [c for c in changes if c["change"] == "column_split"]
        assert len(split) == 1 and split[0]["column_name"].startswith("v__")
        assert split[0]["before"] == "text" and split[0]["batch_ids"]

        code, listed = skein("rejected", "ls", client_id, "--table", "orders")
        assert code == 0
        (kept,) = listed["rejected"]
        assert "NUL" in kept["reason"] and '"id":4' in kept["record"].replace(" ", "")

        def heard() -> list[dict[str, Any]] | None:
            with receiver.lock:
                got = [orjson.loads(b) for status, _, b in receiver.requests if status == 200]
            types = sorted(e["type"] for e in got)
            return (
                got if types == ["records.rejected", "schema.changed", "schema.changed"] else None
            )

        events = wait_for(heard, timeout=60, what="the schema and rejection events")
        with receiver.lock:
            assert all(valid_signature(h, b) for _, h, b in receiver.requests)
        (rejection,) = [e["data"] for e in events if e["type"] == "records.rejected"]
        assert rejection["tables"][0]["num_rows_rejected"] == 1 and rejection["sample"]
    finally:
        receiver.close()
