"""The extractor's pure parts: the built-in target's batching and state safety (against a fake
gate), catalog selection, schedules and back-off, secret redaction, tap specs."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest

from services.extractor import catalog, schedule
from services.extractor.redact import MASK, Redactor, secret_keys, secret_values
from services.extractor.taps import TapError, parse_spec
from services.extractor.target import Target, TargetConfig, TargetError

SCHEMA = {"properties": {"id": {"type": "integer"}}}


def line(obj: dict[str, Any]) -> bytes:
    return orjson.dumps(obj)


def schema_msg(stream: str = "orders", keys: list[str] | None = None) -> bytes:
    return line(
        {"type": "SCHEMA", "stream": stream, "schema": SCHEMA, "key_properties": keys or ["id"]}
    )


def record(i: int, stream: str = "orders") -> bytes:
    return line({"type": "RECORD", "stream": stream, "record": {"id": i}})


def state(n: int) -> bytes:
    return line({"type": "STATE", "value": {"bookmark": n}})


class FakeGate:
    """Answers each POST with the next status in ``script`` (then 202), remembering bodies."""

    def __init__(self, script: list[int | Exception] | None = None) -> None:
        self.script = list(script or [])
        self.accepted: list[dict[str, Any]] = []
        self.attempts = 0

    def __call__(self, body: bytes) -> httpx.Response:
        self.attempts += 1
        answer = self.script.pop(0) if self.script else 202
        if isinstance(answer, Exception):
            raise answer
        if answer == 202:
            self.accepted.append(orjson.loads(body))
        return httpx.Response(answer, json={"status": str(answer)}, headers={"Retry-After": "1"})

    def ids(self) -> list[int]:
        return [m["data"]["id"] for b in self.accepted for m in b["messages"] if "data" in m]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def make_target(
    gate: FakeGate, out: list[dict[str, Any]], clock: Clock | None = None, **config: Any
) -> Target:
    clock = clock or Clock()
    settings = TargetConfig(gate_url="http://gate", token="skn_x", **config)
    return Target(settings, gate, out.append, clock=clock, sleep=clock.sleep)


def states(out: list[dict[str, Any]]) -> list[Any]:
    return [o["value"]["bookmark"] for o in out if o["type"] == "STATE"]


def test_records_go_in_requests_of_at_most_batch_records_in_order() -> None:
    gate, out = FakeGate(), []
    target = make_target(gate, out, batch_records=3)
    target.handle(schema_msg())
    for i in range(7):
        target.handle(record(i))
    target.finish()
    assert [len(b["messages"]) for b in gate.accepted] == [3, 3, 1]
    assert gate.ids() == list(range(7))
    sequences = [m["sequence"] for b in gate.accepted for m in b["messages"]]
    assert sequences == sorted(set(sequences))
    assert gate.accepted[0]["table_name"] == "orders"
    assert gate.accepted[0]["key_names"] == ["id"]
    assert gate.accepted[0]["schema"] == SCHEMA
    assert out[-1] == {"type": "DONE", "records": {"orders": 7}}


def test_a_state_is_emitted_only_after_every_record_before_it_was_accepted() -> None:
    gate, out = FakeGate(), []
    target = make_target(gate, out, batch_records=100, flush_interval_s=1000)
    target.handle(schema_msg())
    target.handle(record(1))
    target.handle(state(1))
    assert states(out) == []  # record 1 is not sent yet, so neither is its state
    target.handle(record(2))
    target.finish()
    assert gate.ids() == [1, 2]
    assert states(out) == [1]
    assert out[0]["records"] == {"orders": 2}


def test_a_state_with_nothing_buffered_is_emitted_at_once() -> None:
    gate, out = FakeGate(), []
    target = make_target(gate, out)
    target.handle(state(5))
    assert states(out) == [5]
    assert gate.attempts == 0


def test_pending_state_is_flushed_after_the_flush_interval() -> None:
    gate, out = FakeGate(), []
    clock = Clock()
    target = make_target(gate, out, clock, batch_records=100, flush_interval_s=10)
    target.handle(schema_msg())
    target.handle(record(1))
    target.handle(state(1))
    clock.now = 11
    target.handle(record(2))
    target.handle(state(2))
    assert gate.ids() == [1, 2]
    assert states(out) == [2]


def test_unavailable_gate_is_retried_and_the_state_waits_for_success() -> None:
    gate, out = FakeGate([503, httpx.ConnectError("refused"), 429]), []
    target = make_target(gate, out, batch_records=2, gate_retry_window_s=60)
    target.handle(schema_msg())
    target.handle(record(1))
    target.handle(state(1))
    target.handle(record(2))
    assert gate.attempts == 4
    assert gate.ids() == [1, 2]
    assert states(out) == [1]


def test_a_gate_down_past_the_retry_window_fails_without_emitting_the_state() -> None:
    gate, out = FakeGate([503] * 100), []
    target = make_target(gate, out, batch_records=2, gate_retry_window_s=5)
    target.handle(schema_msg())
    target.handle(state(0))
    target.handle(record(1))
    target.handle(state(1))
    with pytest.raises(TargetError) as failed:
        target.handle(record(2))
    assert failed.value.temporary
    assert "503" in str(failed.value)
    assert states(out) == [0]  # the last good state only


def test_a_4xx_fails_at_once_and_is_not_temporary() -> None:
    gate, out = FakeGate([400]), []
    target = make_target(gate, out, batch_records=1)
    target.handle(schema_msg())
    with pytest.raises(TargetError) as failed:
        target.handle(record(1))
    assert not failed.value.temporary
    assert gate.attempts == 1
    assert "400" in str(failed.value)


def test_a_schema_change_starts_a_new_request() -> None:
    gate, out = FakeGate(), []
    target = make_target(gate, out)
    target.handle(schema_msg())
    target.handle(record(1))
    target.handle(schema_msg(keys=["id", "other"]))
    target.handle(record(2))
    target.finish()
    assert [b["key_names"] for b in gate.accepted] == [["id"], ["id", "other"]]


def test_versions_and_activate_version_are_sent_in_order() -> None:
    gate, out = FakeGate(), []
    target = make_target(gate, out)
    target.handle(schema_msg())
    target.handle(line({"type": "RECORD", "stream": "orders", "record": {"id": 1}, "version": 7}))
    target.handle(line({"type": "ACTIVATE_VERSION", "stream": "orders", "version": 7}))
    target.finish()
    assert [b["table_version"] for b in gate.accepted] == [7, 7]
    assert gate.accepted[1]["messages"][0]["action"] == "activate_version"
    assert out[-1]["records"] == {"orders": 1}


def test_a_reset_run_versions_its_streams_and_leaves_the_swap_to_the_run() -> None:
    gate, out = FakeGate(), []
    target = make_target(gate, out, reset_version=9, reset_streams=["orders", "tapped"])
    for stream in ("orders", "other", "tapped"):
        target.handle(schema_msg(stream))
    target.handle(record(1, "orders"))
    target.handle(record(2, "other"))
    target.handle(line({"type": "RECORD", "stream": "tapped", "record": {"id": 3}, "version": 5}))
    target.finish()
    versions = {b["table_name"]: b.get("table_version") for b in gate.accepted}
    assert versions == {"orders": 9, "other": None, "tapped": 5}
    # No activation yet (the tap may still fail): DONE names what the run swaps in, and a
    # stream the tap versions itself is left to the tap.
    assert not [m for b in gate.accepted for m in b["messages"] if m["action"] != "upsert"]
    assert out[-1]["activate"] == [{"stream": "orders", "schema": SCHEMA, "key_names": ["id"]}]
    target.activate("orders", SCHEMA, ["id"], 9)
    assert gate.accepted[-1]["table_version"] == 9
    assert gate.accepted[-1]["messages"][0]["action"] == "activate_version"


def test_a_run_without_a_reset_swaps_nothing() -> None:
    gate, out = FakeGate(), []
    target = make_target(gate, out)
    target.handle(schema_msg())
    target.handle(record(1))
    target.finish()
    assert "activate" not in out[-1]
    assert gate.accepted[0].get("table_version") is None


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        (b"not json", "not JSON"),
        (b"[1]", "not a Singer message"),
        (line({"type": "RECORD", "stream": "x", "record": {}}), "before its SCHEMA"),
        (line({"type": "WHAT"}), "unknown Singer message"),
    ],
)
def test_bad_tap_output_fails_clearly(raw: bytes, problem: str) -> None:
    with pytest.raises(TargetError, match=problem):
        make_target(FakeGate(), []).handle(raw)


DISCOVERED = {
    "streams": [
        {
            "tap_stream_id": "public-orders",
            "stream": "orders",
            "schema": {"properties": {"id": {}, "updated_at": {}}},
            "metadata": [{"breadcrumb": [], "metadata": {"table-key-properties": ["id"]}}],
        },
        {"tap_stream_id": "public-users", "stream": "users", "schema": {"properties": {}}},
    ]
}


def root_meta(result: dict[str, Any], index: int) -> dict[str, Any]:
    meta: dict[str, Any] = result["streams"][index]["metadata"][0]["metadata"]
    return meta


def test_select_marks_streams_and_incremental_replication() -> None:
    chosen = catalog.select(DISCOVERED, ["public-users"], {"orders": "updated_at"})
    assert root_meta(chosen, 0)["selected"] is True
    assert root_meta(chosen, 0)["replication-method"] == "INCREMENTAL"
    assert root_meta(chosen, 0)["replication-key"] == "updated_at"
    assert root_meta(chosen, 1) == {"selected": True, "replication-method": "FULL_TABLE"}
    assert catalog.selected_streams(chosen) == [
        {
            "stream": "public-orders",
            "replication_method": "INCREMENTAL",
            "replication_key": "updated_at",
        },
        {"stream": "public-users", "replication_method": "FULL_TABLE", "replication_key": None},
    ]
    assert "selected" not in DISCOVERED["streams"][0]["metadata"][0]["metadata"]  # a copy


def test_select_nothing_named_selects_everything_and_unknown_names_are_refused() -> None:
    assert len(catalog.selected_streams(catalog.select(DISCOVERED))) == 2
    only = catalog.select(DISCOVERED, ["public-orders"])
    assert [s["stream"] for s in catalog.selected_streams(only)] == ["public-orders"]
    with pytest.raises(catalog.CatalogError, match=r"no stream nope.*public-orders"):
        catalog.select(DISCOVERED, ["nope"])
    with pytest.raises(catalog.CatalogError, match="no column 'missing'"):
        catalog.select(DISCOVERED, (), {"public-orders": "missing"})


def test_schedules() -> None:
    assert schedule.check("*/5  * * * *") == "*/5 * * * *"
    assert schedule.check("* * * * * */10") == "* * * * * */10"
    for bad in ("* * *", "61 * * * *", "every minute"):
        with pytest.raises(schedule.ScheduleError):
            schedule.check(bad)
    at = datetime(2026, 1, 1, 10, 7, 30, tzinfo=UTC)
    assert schedule.next_run("0 * * * *", at) == datetime(2026, 1, 1, 11, 0, tzinfo=UTC)
    assert schedule.next_run("* * * * * */10", at) == at + timedelta(seconds=10)


def test_retry_back_off_grows_to_its_cap_and_the_schedule_wins_when_sooner() -> None:
    rng = random.Random(1)
    delays = [schedule.retry_delay(n, 30, 600, rng) for n in range(1, 8)]
    for n, delay in enumerate(delays, start=1):
        full = min(600, 30 * 2 ** (n - 1))
        assert full / 2 <= delay < full
    assert schedule.retry_delay(10_000, 30, 600) < 600
    at = datetime(2026, 1, 1, 10, 59, 50, tzinfo=UTC)
    assert schedule.after_failure("0 * * * *", at, 5, 30, 600) == datetime(
        2026, 1, 1, 11, 0, tzinfo=UTC
    )
    soon = schedule.after_failure("0 0 1 1 *", at, 1, 30, 600)
    assert at + timedelta(seconds=15) <= soon < at + timedelta(seconds=30)


def test_secrets_are_found_by_name_and_masked_in_text() -> None:
    config = {
        "host": "db.internal",
        "password": "hunter22",
        "api_key": "k-123456",
        "user": "etl",
        "sqlalchemy_url": "postgresql://etl:s3cr3t-pw@db/x",
        "ssh_tunnel": {"private_key": "-----BEGIN KEY-----", "port": 22},
        "region_label": "custom",
    }
    keys = secret_keys(config, extra=["region_label"])
    assert keys == ["api_key", "password", "region_label", "sqlalchemy_url"]
    values = secret_values(config, keys)
    assert {"hunter22", "k-123456", "custom", "s3cr3t-pw", "-----BEGIN KEY-----"} <= set(values)
    assert "db.internal" not in values and "etl" not in values
    redact = Redactor(values)
    text = "login hunter22 via postgresql://etl:s3cr3t-pw@db/x key k-123456 other://a:b-pass@h"
    masked = redact(text)
    for secret in ("hunter22", "s3cr3t-pw", "k-123456", "b-pass"):
        assert secret not in masked
    assert masked.count(MASK) == 4
    assert redact("db.internal") == "db.internal"


def test_tap_specs() -> None:
    assert parse_spec("MeltanoLabs_Tap.Postgres").requirement == "meltanolabs-tap-postgres"
    pinned = parse_spec("tap-postgres==0.10.0")
    assert (pinned.package, pinned.version) == ("tap-postgres", "0.10.0")
    for bad in ("tap>=1", "tap==1.*", "tap[x]==1", "tap @ https://x/y.whl", "not a name!"):
        with pytest.raises(TapError):
            parse_spec(bad)
