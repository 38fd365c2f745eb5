"""Uploads in parallel, registrations in cut order, retries until healthy, with fake stores."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from common.spool_client import BatchRegistration, SpoolConflict, SpoolRefused, SpoolUnavailable
from services.streamery.batch import Batch, Message, Stream
from services.streamery.shipper import Shipped, Shipper
from support.stack import wait_for

HEADER = (
    b'{"v":1,"client_id":7,"table_name":"t","key_names":[],"schema":null,"table_version":null,'
    b'"received_at":"2026-11-26T10:00:00.000000Z","request_id":"r","source":"batch"}'
)


class FakeStore:
    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.delays: dict[str, float] = {}
        self.down = threading.Event()

    def put(self, key: str, body: bytes) -> None:
        if self.down.is_set():
            raise ConnectionError("S3 is down")
        time.sleep(self.delays.get(key, 0.0))  # injected slowness, not synchronisation
        self.objects[key] = body

    def reachable(self) -> bool:
        return not self.down.is_set()


class FakeSpool:
    """The spool's registration contract: idempotent keys, per-stream marks, 409 below them."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.registered: list[BatchRegistration] = []
        self.marks: dict[tuple[int, int, str], int] = {}
        self.down = threading.Event()
        self.requests: list[int] = []  # registrations per request, in request order
        self.latency = 0.0  # injected slowness of each request, not synchronisation
        self.refuse_bulk = False  # the bulk route refuses the whole request (422)
        self.dead: list[tuple[BatchRegistration, str]] = []
        self.bulk_refused = 0
        self.poison: set[str] = set()  # tables whose registration fails the spool's transaction

    def register(self, batch: BatchRegistration) -> dict[str, Any]:
        if self.down.is_set():
            raise SpoolUnavailable("spool is down")
        self.requests.append(1)
        time.sleep(self.latency)
        return self._register(batch)

    def register_many(
        self, batches: list[BatchRegistration]
    ) -> list[dict[str, Any] | SpoolConflict | SpoolRefused]:
        if self.down.is_set():
            raise SpoolUnavailable("spool is down")
        if self.refuse_bulk:
            self.bulk_refused += 1
            raise SpoolRefused("422: a malformed registration")
        if any(b.table_name in self.poison for b in batches):
            raise SpoolUnavailable("500: one registration failed the transaction")
        self.requests.append(len(batches))
        time.sleep(self.latency)
        out: list[dict[str, Any] | SpoolConflict | SpoolRefused] = []
        for b in batches:
            try:
                out.append(self._register(b))
            except (SpoolConflict, SpoolRefused) as exc:
                out.append(exc)
        return out

    def dead_letter(self, batch: BatchRegistration, reason: str) -> dict[str, Any]:
        with self.lock:
            self.dead.append((batch, reason))
            return {"batch_id": -len(self.dead), "created": True, "state": "dead"}

    def _register(self, batch: BatchRegistration) -> dict[str, Any]:
        if batch.table_name in self.poison:
            raise SpoolUnavailable("500: this registration fails the transaction")
        if batch.client_id == 404:
            raise SpoolRefused("client 404 does not exist")
        with self.lock:
            if any(r.object_key == batch.object_key for r in self.registered):
                return {"batch_id": 1, "created": False}
            stream = (batch.partition, batch.client_id, batch.table_name)
            if batch.first_offset <= self.marks.get(stream, -1):
                raise SpoolConflict("at or below the high-water mark")
            self.registered.append(batch)
            self.marks[stream] = batch.last_offset
            return {"batch_id": len(self.registered), "created": True}

    def high_water(self, partitions: list[int]) -> dict[tuple[int, int, str], int]:
        if self.down.is_set():
            raise SpoolUnavailable("spool is down")
        with self.lock:
            return {k: v for k, v in self.marks.items() if k[0] in partitions}


def batch(first: int, last: int, partition: int = 0, table: str = "t") -> Batch:
    messages = [
        Message(
            o,
            HEADER + b'\n{"action":"upsert","sequence":%d}' % o,
            len(HEADER),
            1,
            "2026-11-26T10:00:00.000000Z",
            "r",
        )
        for o in range(first, last + 1)
    ]
    return Batch(Stream(partition, 7, table), messages, 100)


@pytest.fixture
def store() -> FakeStore:
    return FakeStore()


@pytest.fixture
def spool() -> FakeSpool:
    return FakeSpool()


@pytest.fixture
def shipper(store: FakeStore, spool: FakeSpool) -> Iterator[Shipper]:
    s = Shipper(store, spool, workers=4, gzip_level=1, backoff_max_s=0.05)
    yield s
    s.close()


def outcomes(shipper: Shipper, count: int, timeout: float = 10) -> list[Shipped]:
    got: list[Shipped] = []

    def more() -> bool:
        while not shipper.completions.empty():
            got.append(shipper.completions.get_nowait())
        return len(got) >= count

    wait_for(more, timeout=timeout, interval=0.01, what=f"{count} outcomes")
    return got


def test_a_tables_batches_register_in_cut_order_even_when_uploads_finish_out_of_order(
    shipper: Shipper, store: FakeStore, spool: FakeSpool
) -> None:
    batches = [batch(0, 1), batch(2, 3), batch(4, 5), batch(0, 9, table="other")]
    store.delays = {batches[0].object_key: 0.3, batches[1].object_key: 0.15}
    for b in batches:
        shipper.ship(b)
    done = outcomes(shipper, 4)
    assert all(d.registered for d in done)
    assert [r.first_offset for r in spool.registered if r.table_name == "t"] == [0, 2, 4]
    assert spool.registered[0].table_name == "other"  # not held back by the slow table
    assert [d.batch.first_offset for d in done if d.batch.stream.table_name == "t"] == [0, 2, 4]
    assert spool.registered[1].bytes == len(store.objects[spool.registered[1].object_key])


def test_while_s3_is_down_nothing_registers_and_the_shipper_reports_failing(
    shipper: Shipper, store: FakeStore, spool: FakeSpool
) -> None:
    store.down.set()
    shipper.ship(batch(0, 1))
    wait_for(lambda: shipper.failing, timeout=5, what="failing")
    assert spool.registered == [] and shipper.completions.empty()
    store.down.clear()
    assert outcomes(shipper, 1)[0].registered
    assert not shipper.failing


def test_spool_outage_is_retried_until_it_returns(
    shipper: Shipper, store: FakeStore, spool: FakeSpool
) -> None:
    spool.down.set()
    shipper.ship(batch(0, 1))
    shipper.ship(batch(2, 3))
    wait_for(lambda: shipper.failing, timeout=5, what="failing")
    spool.down.clear()
    assert [d.registered for d in outcomes(shipper, 2)] == [True, True]
    assert [r.first_offset for r in spool.registered] == [0, 2]


def test_abandoned_batches_are_reported_unregistered(
    shipper: Shipper, store: FakeStore, spool: FakeSpool
) -> None:
    store.down.set()
    shipper.ship(batch(0, 1, partition=0))
    shipper.ship(batch(0, 1, partition=1))
    wait_for(lambda: shipper.failing, timeout=5, what="failing")
    shipper.abandon({0})
    (first,) = outcomes(shipper, 1)
    assert (first.batch.stream.partition, first.registered) == (0, False)
    store.down.clear()
    (second,) = outcomes(shipper, 1)
    assert (second.batch.stream.partition, second.registered) == (1, True)
    assert not shipper.failing


def test_offsets_another_writer_registered_are_dropped_not_duplicated(
    shipper: Shipper, store: FakeStore, spool: FakeSpool
) -> None:
    spool.marks[(0, 7, "t")] = 11  # a previous owner of the partition registered up to 11
    shipper.ship(batch(10, 13))
    shipper.ship(batch(14, 15, table="u"))
    spool.marks[(0, 7, "v")] = 30
    shipper.ship(batch(20, 25, table="v"))
    done = outcomes(shipper, 3)
    assert all(d.registered for d in done)
    assert [(r.table_name, r.first_offset, r.last_offset) for r in spool.registered] == [
        ("t", 12, 13),
        ("u", 14, 15),
    ] or [(r.table_name, r.first_offset, r.last_offset) for r in spool.registered] == [
        ("u", 14, 15),
        ("t", 12, 13),
    ]
    assert next(d for d in done if d.batch.stream.table_name == "t").batch.unit_offset == 10


def test_an_unreadable_message_is_kept_in_s3_and_never_registered(
    shipper: Shipper, store: FakeStore, spool: FakeSpool
) -> None:
    parked = Batch(
        Stream(2, -1, "offset-5"), [Message(5, b"\xff not json", 0, 0, "", "")], 1, unreadable=True
    )
    shipper.ship(parked)
    assert outcomes(shipper, 1)[0].registered
    assert store.objects == {"_unreadable/2/00000000000000000005.bin": b"\xff not json"}
    assert spool.registered == []


@pytest.mark.parametrize("refuse_bulk", [False, True])
def test_registrations_waiting_on_a_slow_spool_go_together_each_with_its_own_answer(
    shipper: Shipper, store: FakeStore, spool: FakeSpool, refuse_bulk: bool
) -> None:
    """40 small tables' batches on 4 upload threads while each spool request takes 50 ms:
    the registrations that wait meanwhile go in one request (in cut order per table), every
    batch gets its own outcome, and a conflict or a refused client in a group touches only
    its own batch. Where the bulk route refuses a request as a whole, each goes alone."""
    spool.latency = 0.05
    spool.refuse_bulk = refuse_bulk
    spool.marks[(0, 7, "t3")] = 100  # another writer registered t3 past this batch: dropped
    batches = [batch(0, 1, table=f"t{n}") for n in range(40)]
    batches.append(batch(2, 3, table="t0"))  # t0's second batch, after its first
    refused = Batch(Stream(0, 404, "gone"), batches[5].messages, 100)  # no such client
    for b in [*batches, refused]:
        shipper.ship(b)
    done = outcomes(shipper, len(batches) + 1)
    assert all(d.registered for d in done)
    registered = [(r.table_name, r.first_offset) for r in spool.registered]
    assert len(registered) == 40 and ("t3", 0) not in registered
    assert registered.index(("t0", 0)) < registered.index(("t0", 2))
    assert {n for n in spool.requests} <= ({1} if refuse_bulk else {1, 2, 3, 4})
    assert (spool.bulk_refused > 0) == refuse_bulk  # refused: the fallback sent each alone
    if not refuse_bulk:
        assert len(spool.requests) < 41 and max(spool.requests) > 1
    assert sum(spool.requests) >= 42  # every batch was asked about
    assert [(b.client_id, reason) for b, reason in spool.dead] == [
        (404, "client 404 does not exist")
    ]


def test_a_registration_that_fails_its_group_fails_only_its_own_batch(
    shipper: Shipper, store: FakeStore, spool: FakeSpool
) -> None:
    """One registration fails the spool's transaction (a 500) every time it is sent: the
    others of its groups are sent again alone and registered; it keeps retrying, and registers
    once the spool takes it."""
    spool.latency = 0.05
    spool.poison = {"t7"}
    batches = [batch(0, 1, table=f"t{n}") for n in range(20)]
    for b in batches:
        shipper.ship(b)
    done = outcomes(shipper, 19)
    assert all(d.registered for d in done)
    assert sorted(r.table_name for r in spool.registered) == sorted(
        f"t{n}" for n in range(20) if n != 7
    )
    wait_for(lambda: shipper.failing, timeout=5, what="t7 failing")
    spool.poison = set()
    (last,) = outcomes(shipper, 1)
    assert last.registered and last.batch.stream.table_name == "t7"
