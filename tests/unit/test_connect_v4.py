"""Stitch Connect v4 shapes from Skein's records, and a load error's SQL state."""

from __future__ import annotations

import time

from services.control import connect
from services.loaders.core.errors import PermanentError, TransientError, classify
from services.spool.status import TableStatus


class FakeDriverError(Exception):
    pgcode = "42P01"


def table(**kw: object) -> TableStatus:
    base: dict[str, object] = dict(
        client_id=7, table_name="orders", destination_type="postgres",
        last_loaded_at="2026-12-05T10:00:00+00:00", last_load_freshness_s=2.0,
        oldest_unloaded_age_s=None, pending=0, dead=0, last_error=None,
    )  # fmt: skip
    base.update(kw)
    return TableStatus(**base)  # type: ignore[arg-type]


def test_a_load_error_carries_the_warehouse_sql_state() -> None:
    found = classify(FakeDriverError("relation missing"), lambda e: PermanentError(str(e)))
    assert isinstance(found, PermanentError)
    assert str(found) == "relation missing [SQLSTATE 42P01]"
    wrapped = TransientError("connection lost")
    wrapped.__cause__ = FakeDriverError("x")
    assert str(classify(wrapped, lambda e: None)).endswith("[SQLSTATE 42P01]")
    assert str(classify(ValueError("plain"), lambda e: None)) == "ValueError: plain"


def test_loads_name_the_source_and_the_warehouse_error() -> None:
    healthy = connect.load(7, table(), "pg-tap")
    assert healthy == {
        "stitch_client_id": 7,
        "source_name": "pg-tap",
        "stream_name": "orders",
        "last_batch_loaded_at": "2026-12-05T10:00:00+00:00",
        "error_state": None,
    }
    broken = connect.load(7, table(dead=2, last_error="UndefinedTable: no [SQLSTATE 42P01]"), None)
    assert broken["source_name"] == "import_api"
    data = broken["error_state"]["notification_data"]
    assert data["sql_state"] == "42P01" and "UndefinedTable" in data["warehouse_message"]


def test_extractions_say_which_side_failed() -> None:
    run = {"run_id": 9, "integration_id": 3, "name": "n", "tap": "tap-x", "status": "failed",
           "started_at": "s", "ended_at": "e", "error": "the tap exited with 2: boom"}  # fmt: skip
    got = connect.extraction(7, run)
    assert got["job_name"] == "7.3.9" and got["source_id"] == 3
    assert (got["tap_exit_status"], got["target_exit_status"]) == (2, 0)
    assert got["tap_description"] == "the tap exited with 2: boom"
    gate = connect.extraction(7, {**run, "error": "gate unavailable: 503"})
    assert (gate["tap_exit_status"], gate["target_exit_status"]) == (0, 1)
    ok = connect.extraction(7, {**run, "status": "succeeded", "error": None})
    assert (ok["tap_exit_status"], ok["target_exit_status"], ok["discovery_exit_status"]) == (
        0,
        0,
        0,
    )
    running = connect.extraction(7, {**run, "status": "running", "ended_at": None})
    assert running["tap_exit_status"] is None and running["completion_time"] is None
    assert connect.parse_job("7.3.9") == (7, 3, 9) and connect.parse_job("7.3") is None


def test_pages_link_both_ways() -> None:
    middle = connect.page([{}], 2, 10, 25, "/v4/7/loads")
    assert middle["links"] == {"next": "/v4/7/loads?page=3", "previous": "/v4/7/loads?page=1"}
    assert connect.page([], 1, 10, 0, "/x")["links"] == {"next": None, "previous": None}


def test_log_urls_are_signed_and_expire() -> None:
    path = connect.signed_log_path("k", "7.3.9", 60)
    expires = int(path.split("expires=")[1].split("&")[0])
    signature = path.split("signature=")[1]
    assert connect.valid_signature("k", "7.3.9", expires, signature)
    assert not connect.valid_signature("k", "7.3.8", expires, signature)
    assert not connect.valid_signature("other", "7.3.9", expires, signature)
    old = int(time.time()) - 1
    assert not connect.valid_signature("k", "7.3.9", old, connect.sign("k", "7.3.9", old))
