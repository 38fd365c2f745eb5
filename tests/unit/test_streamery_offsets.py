"""Commit only the contiguous prefix of records that are in registered batches (invariant 3)."""

from __future__ import annotations

from services.streamery.offsets import OffsetTracker


def tracker(*partitions: int) -> OffsetTracker:
    t = OffsetTracker()
    for p in partitions:
        t.assign(p)
    return t


def test_nothing_read_nothing_to_commit() -> None:
    t = tracker(0)
    assert t.committable(0) is None
    assert t.due() == {}


def test_commit_stops_at_the_first_unregistered_message_of_any_table() -> None:
    t = tracker(0)
    # offsets 0..5 interleave tables A (0, 2, 4) and B (1, 3, 5); A's units: 0, then 4.
    t.read(0, 0)
    t.open(0, 0)  # A's first buffer
    t.read(0, 1)
    t.open(0, 1)  # B's buffer
    for offset in (2, 3):
        t.read(0, offset)
    t.read(0, 4)
    t.open(0, 4)  # A's second buffer (the first was cut at offset 2)
    t.read(0, 5)
    assert t.committable(0) == 0
    t.close(0, 0)  # A's first batch registered: B's unit still holds offset 1
    assert t.committable(0) == 1
    t.close(0, 1)
    assert t.committable(0) == 4
    t.close(0, 4)
    assert t.committable(0) == 6  # everything read is durable: the next offset


def test_registration_out_of_cut_order_across_tables_waits_for_the_lowest() -> None:
    t = tracker(0)
    for offset in range(3):
        t.read(0, offset)
        t.open(0, offset)
    t.close(0, 2)
    t.close(0, 1)
    assert t.committable(0) == 0
    t.close(0, 0)
    assert t.committable(0) == 3


def test_skipped_messages_move_the_commit_point() -> None:
    t = tracker(0)
    for offset in range(10):
        t.read(0, offset)  # all at or below their marks: no unit opened
    assert t.due() == {0: 10}


def test_due_offers_each_advance_once_and_again_after_a_failed_commit() -> None:
    t = tracker(0, 1)
    t.read(0, 4)
    t.read(1, 7)
    assert t.due() == {0: 5, 1: 8}
    t.committed(0, 5)
    t.committed(1, 8)
    assert t.due() == {}
    t.commit_failed(1)
    assert t.due() == {1: 8}
    assert t.due([0]) == {}


def test_partitions_are_independent_and_revocation_forgets() -> None:
    t = tracker(0, 1)
    t.read(0, 0)
    t.open(0, 0)
    t.read(1, 0)
    assert t.due() == {0: 0, 1: 1}  # partition 0: nothing durable yet, its start
    t.committed(0, 0)
    t.committed(1, 1)
    t.revoke(0)
    t.close(0, 0)  # a late registration of a revoked partition is ignored
    assert 0 not in t
    t.read(1, 1)
    assert t.due() == {1: 2}
