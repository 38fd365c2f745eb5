"""The loader's warehouse-session pool: a cap in all, least recently used first out, idle
sessions closed, a changed destination never served an old session."""

from __future__ import annotations

import threading
import time
from itertools import count

import pytest

from services.loaders.core.sessions import SessionPool


class FakeWarehouse:
    def __init__(self) -> None:
        self.serial = count(1)
        self.open: set[str] = set()
        self.peak = 0
        self.lock = threading.Lock()

    def opener(self, client: int) -> object:
        def make() -> str:
            with self.lock:
                name = f"c{client}-s{next(self.serial)}"
                self.open.add(name)
                self.peak = max(self.peak, len(self.open))
                return name

        return make

    def close(self, session: object) -> None:
        with self.lock:
            self.open.discard(str(session))


def test_a_session_is_reused_for_the_same_client_and_version() -> None:
    wh = FakeWarehouse()
    pool = SessionPool(wh.close, cap=4, idle_s=60)
    with pool.session(1, "v1", wh.opener(1)) as first:
        assert not first.reused
    with pool.session(1, "v1", wh.opener(1)) as again:
        assert again.reused and again.session == first.session
    assert pool.open_count == 1


def test_at_the_cap_the_least_recently_used_idle_session_is_closed() -> None:
    wh = FakeWarehouse()
    pool = SessionPool(wh.close, cap=3, idle_s=60)
    for client in (1, 2, 3, 1, 4):  # client 2 is the least recently used when 4 arrives
        with pool.session(client, "v", wh.opener(client)):
            pass
    assert pool.open_count == 3
    assert {s.split("-")[0] for s in wh.open} == {"c1", "c3", "c4"}
    assert wh.peak == 3


def test_three_hundred_clients_never_hold_more_than_the_cap() -> None:
    wh = FakeWarehouse()
    pool = SessionPool(wh.close, cap=16, idle_s=60)

    def worker(offset: int) -> None:
        for client in range(offset, 300, 4):
            with pool.session(client, "v", wh.opener(client)):
                time.sleep(0.0005)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wh.peak <= 16
    assert pool.open_count == len(wh.open) <= 16


def test_a_changed_destination_closes_the_old_version_and_opens_anew() -> None:
    wh = FakeWarehouse()
    pool = SessionPool(wh.close, cap=4, idle_s=60)
    with pool.session(7, "2026-01-01", wh.opener(7)) as old:
        pass
    with pool.session(7, "2026-02-01", wh.opener(7)) as new:
        assert not new.reused and new.session != old.session
    assert wh.open == {new.session}


def test_idle_sessions_close_after_the_idle_time() -> None:
    now = [0.0]
    wh = FakeWarehouse()
    pool = SessionPool(wh.close, cap=4, idle_s=60, clock=lambda: now[0])
    with pool.session(1, "v", wh.opener(1)):
        pass
    now[0] = 30.0
    with pool.session(2, "v", wh.opener(2)):
        pass
    now[0] = 61.0
    assert pool.reap() == 1
    assert {s.split("-")[0] for s in wh.open} == {"c2"}


def test_a_discarded_session_is_closed_not_given_back() -> None:
    wh = FakeWarehouse()
    pool = SessionPool(wh.close, cap=2, idle_s=60)
    with pytest.raises(RuntimeError), pool.session(1, "v", wh.opener(1)) as lent:
        lent.discard()
        raise RuntimeError("load failed")
    assert wh.open == set() and pool.open_count == 0


def test_when_every_session_is_lent_the_next_caller_waits_for_one() -> None:
    wh = FakeWarehouse()
    pool = SessionPool(wh.close, cap=1, idle_s=60)
    released = threading.Event()
    got: list[object] = []

    def second() -> None:
        with pool.session(2, "v", wh.opener(2)) as lent:
            got.append(lent.session)

    with pool.session(1, "v", wh.opener(1)):
        t = threading.Thread(target=second)
        t.start()
        time.sleep(0.2)
        assert got == []  # still waiting: the cap holds
        released.set()
    t.join(5)
    assert got and wh.peak == 1


def test_a_failed_open_frees_its_slot() -> None:
    wh = FakeWarehouse()
    pool = SessionPool(wh.close, cap=1, idle_s=60)

    def refuse() -> object:
        raise OSError("connection refused")

    with pytest.raises(OSError), pool.session(1, "v", refuse):
        pass
    with pool.session(2, "v", wh.opener(2)) as lent:
        assert lent.session


def test_after_a_failure_the_clients_other_idle_sessions_are_not_handed_out() -> None:
    wh = FakeWarehouse()
    pool = SessionPool(wh.close, cap=8, idle_s=60)
    with pool.session(1, "v", wh.opener(1)) as a, pool.session(1, "v", wh.opener(1)) as b:
        pass  # two idle sessions of client 1 (a warehouse restart kills both)
    with pool.session(2, "v", wh.opener(2)):
        pass
    assert pool.discard_idle(1) == 2
    with pool.session(1, "v", wh.opener(1)) as fresh:
        assert not fresh.reused and fresh.session not in (a.session, b.session)
    assert pool.open_count == 2  # client 2's session and the fresh one
