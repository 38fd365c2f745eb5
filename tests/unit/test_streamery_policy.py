"""The cut policy and the flow policy, driven by an injected clock: no Kafka, no S3."""

from __future__ import annotations

import pytest

from common.wire import Header, TableRecords, encode_messages
from services.streamery.batch import MESSAGE_OVERHEAD
from services.streamery.buffers import TableBuffers
from services.streamery.consumer import kafka_config
from services.streamery.offsets import OffsetTracker
from services.streamery.policy import BufferView, Cut, CutPolicy, CutReason, FlowPolicy
from services.streamery.settings import MiB, StreamerySettings

KB = 1024


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


def message(table: str, records: int, record_bytes: int = 100, client: int = 7) -> bytes:
    header = Header(
        client, table, ("id",), None, None, "2026-11-26T10:00:00.000000Z", "r1", "batch"
    )
    lines = [
        b'{"action":"upsert","sequence":1,"data":{"v":"' + b"x" * record_bytes + b'"}}'
    ] * records
    (value,) = encode_messages(TableRecords(header, lines), 64 * MiB)
    return value


def buffers(policy: CutPolicy) -> TableBuffers:
    tracker = OffsetTracker()
    tracker.assign(0)
    tracker.assign(1)
    return TableBuffers(policy, tracker)


def policy(**overrides: float) -> CutPolicy:
    values: dict[str, float] = {
        "max_batch_bytes": 100 * KB,
        "max_batch_records": 1000,
        "max_age_s": 10.0,
        "memory_budget": 10 * MiB,
    }
    values.update(overrides)
    return CutPolicy(**values)  # type: ignore[arg-type]


def test_a_buffer_is_cut_before_the_message_that_would_overflow_it() -> None:
    value = message("orders", 10, 1000)  # ~10 KB
    b = buffers(policy(max_batch_bytes=len(value) * 3 + 3 * MESSAGE_OVERHEAD))
    assert b.add(0, 0, b"7/orders", value, 0.0) == []
    assert b.add(0, 1, b"7/orders", value, 0.0) == []
    cuts = b.add(0, 2, b"7/orders", value, 0.0)  # exactly full: cut after appending
    assert [(c.first_offset, c.last_offset, r) for c, r in cuts] == [(0, 2, CutReason.SIZE)]
    assert b.add(0, 3, b"7/orders", value, 0.0) == []
    assert b.bytes == len(value) + MESSAGE_OVERHEAD


def test_a_message_larger_than_the_limit_is_a_batch_of_its_own() -> None:
    small, big = message("t", 1), message("t", 200, 1000)
    b = buffers(policy(max_batch_bytes=50 * KB))
    b.add(0, 0, b"7/t", small, 0.0)
    cuts = b.add(0, 1, b"7/t", big, 0.0)
    assert [(c.first_offset, c.last_offset, r) for c, r in cuts] == [
        (0, 0, CutReason.SIZE),
        (1, 1, CutReason.SIZE),
    ]
    assert len(b) == 0


def test_record_limit() -> None:
    b = buffers(policy(max_batch_records=25))
    assert b.add(0, 0, b"7/t", message("t", 10), 0.0) == []
    assert b.add(0, 1, b"7/t", message("t", 10), 0.0) == []
    cuts = b.add(0, 2, b"7/t", message("t", 10), 0.0)
    assert [(c.record_count, r) for c, r in cuts] == [(20, CutReason.RECORDS)]


def test_age_is_measured_from_the_first_message_with_the_injected_clock() -> None:
    clock = Clock()
    b = buffers(policy(max_age_s=10))
    b.add(0, 0, b"7/a", message("a", 1), clock.now)
    b.add(0, 1, b"7/b", message("b", 1), clock.advance(6))
    assert b.due(clock.advance(3.9)) == []
    cuts = b.due(clock.advance(0.1))  # a is 10 s old, b 4 s
    assert [(c.stream.table_name, r) for c, r in cuts] == [("a", CutReason.AGE)]
    b.add(0, 2, b"7/b", message("b", 1), clock.advance(5.9))  # b's age counts from its first
    assert b.due(clock.now) == []
    clock.advance(0.1)
    assert [(c.stream.table_name, c.record_count) for c, _ in b.due(clock.now)] == [("b", 2)]


def test_memory_pressure_cuts_the_largest_buffers_first_down_to_half_the_share() -> None:
    p = policy(memory_budget=1000)  # buffers may hold 500
    views = [
        BufferView("small", 0, 100, 1, 0.0),
        BufferView("large", 0, 300, 1, 0.0),
        BufferView("medium", 1, 200, 1, 0.0),
    ]
    assert p.due(views[:2], 1.0) == []  # 400 <= 500
    # 600 > 500: cut 300 (300 left, more than 250), then 200 (100 left)
    assert p.due(views, 1.0) == [Cut("large", CutReason.MEMORY), Cut("medium", CutReason.MEMORY)]


def test_shutdown_cuts_everything_and_revocation_only_its_partitions() -> None:
    p = policy()
    views = [BufferView("a", 0, 10, 1, 999.0), BufferView("b", 1, 10, 1, 999.0)]
    assert p.due(views, 1000.0, shutting_down=True) == [
        Cut("a", CutReason.SHUTDOWN),
        Cut("b", CutReason.SHUTDOWN),
    ]
    assert p.due(views, 1000.0, revoked={1}) == [Cut("b", CutReason.REVOKE)]


def test_tables_and_clients_never_share_a_buffer() -> None:
    b = buffers(policy())
    b.add(0, 0, b"7/t", message("t", 1, client=7), 0.0)
    b.add(0, 1, b"8/t", message("t", 1, client=8), 0.0)
    b.add(0, 2, b"7/u", message("u", 1, client=7), 0.0)
    b.add(1, 0, b"7/t", message("t", 1, client=7), 0.0)
    cuts = b.due(0.0, shutting_down=True)
    assert sorted((c.stream, c.first_offset) for c, _ in cuts) == [
        ((0, 7, "t"), 0),
        ((0, 7, "u"), 2),
        ((0, 8, "t"), 1),
        ((1, 7, "t"), 0),
    ]


def test_flow_pauses_at_the_budget_or_on_failure_and_resumes_below_80_percent() -> None:
    flow = FlowPolicy(memory_budget=1000)
    assert not flow.paused(was_paused=False, held_bytes=999, failing=False)
    assert flow.paused(was_paused=False, held_bytes=1000, failing=False)
    assert flow.paused(was_paused=True, held_bytes=900, failing=False)
    assert not flow.paused(was_paused=True, held_bytes=800, failing=False)
    assert flow.paused(was_paused=False, held_bytes=0, failing=True)


@pytest.mark.parametrize(("limit", "queue_kb"), [(512 * MiB, 32 * 1024), (64 * MiB, 4 * 1024)])
def test_librdkafka_queue_is_a_bounded_share_of_the_memory_limit(limit: int, queue_kb: int) -> None:
    config = kafka_config(StreamerySettings(memory_limit_bytes=limit))
    assert config["queued.max.messages.kbytes"] == queue_kb
    assert config["queued.max.messages.kbytes"] * 1024 + 3 * config["fetch.max.bytes"] < limit / 8
    assert config["enable.auto.commit"] is False
    assert config["enable.auto.offset.store"] is False


def test_a_quiet_table_is_cut_at_once_and_a_busy_one_keeps_growing() -> None:
    """The quiet gap: a table with no new message for ``quiet_s`` is cut (reason quiet) long
    before its age; a table whose messages keep coming is not, for as long as they come."""
    b = buffers(policy(max_age_s=5.0, quiet_s=0.25))
    assert b.add(0, 0, b"7/orders", message("orders", 1, 10), 0.0) == []
    cut: dict[str, tuple[float, CutReason]] = {}
    for step in range(40):  # "busy" gets a message every 0.1 s for 4 s
        now = step * 0.1
        assert b.add(0, 1 + step, b"7/busy", message("busy", 1, 10), now) == []
        for batch, reason in b.due(now + 0.05):
            cut[batch.stream.table_name] = (now + 0.05, reason)
    assert "busy" not in cut
    assert cut["orders"][1] == CutReason.QUIET and cut["orders"][0] < 0.5
    [(batch, reason)] = b.due(3.9 + 0.3)  # busy's messages stop: it goes too, as quiet
    assert (batch.stream.table_name, batch.record_count, reason) == ("busy", 40, CutReason.QUIET)


def test_without_a_quiet_gap_a_buffer_waits_for_its_age() -> None:
    b = buffers(policy(max_age_s=5.0))
    b.add(0, 0, b"7/orders", message("orders", 1, 10), 0.0)
    assert b.due(4.9) == []
    [(_, reason)] = b.due(5.0)
    assert reason == CutReason.AGE


def test_a_trickle_is_cut_at_the_fresh_age_and_many_open_tables_wait_longer() -> None:
    """A table getting a message every 0.2 s never goes quiet for 0.25 s: the fresh age cuts
    it once its first message waited 0.5 s. With more buffers open than the early-cut budget
    allows, each waits open buffers / the budget instead, so the batch rate stays bounded."""
    p = CutPolicy(
        max_batch_bytes=MiB,
        max_batch_records=1000,
        max_age_s=5.0,
        memory_budget=64 * MiB,
        quiet_s=0.25,
        fresh_age_s=0.5,
        fresh_cuts_per_s=100.0,
    )
    assert p.fresh_age(20) == 0.5 and p.fresh_age(300) == 3.0
    b = buffers(p)
    cuts: list[tuple[float, int, CutReason]] = []
    for step in range(40):  # one message every 0.2 s for 2 s; the loop looks every 0.05 s
        now = step * 0.05
        if step % 4 == 0:
            b.add(0, step, b"7/trickle", message("trickle", 1, 10), now)
        for batch, reason in b.due(now + 0.01):
            cuts.append((now + 0.01, batch.record_count, reason))
    assert [reason for _, _, reason in cuts] == [CutReason.FRESH] * len(cuts)
    assert len(cuts) == 3 and all(records == 3 for _, records, _ in cuts)
    views = [BufferView(n, 0, 100, 1, opened_at=0.0, updated_at=2.9) for n in range(300)]
    assert p.due(views, 2.95) == []  # 300 open: each waits 3 s
    assert {c.reason for c in p.due(views, 3.0)} == {CutReason.FRESH}
    assert CutPolicy(1, 1, 5.0, 1, fresh_age_s=0.0).fresh_age(1) == 0.0  # off
