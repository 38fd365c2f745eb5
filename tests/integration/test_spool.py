"""The spool on a real Postgres, through its HTTP API: leases, order, retries, dead batches.

Each test module run gets its own control database and its own spool process, so leasers here
never take (or disturb) batches of the shared stack.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import httpx
import orjson
import psycopg2
import psycopg2.sql
import pytest

from common import client_limits, db, netpolicy
from common import migrate as migrations
from common.s3 import client as s3_client
from common.settings import SharedSettings
from common.spool_client import (
    BatchRegistration,
    SpoolClient,
    SpoolConflict,
    SpoolHTTPError,
    SpoolRefused,
    SpoolUnavailable,
)
from services.control import accounts, destinations, hooks
from services.spool import operations, queue
from services.spool.policy import RetryPolicy
from support.stack import ROOT, scratch_database, wait_for

TOKEN = "spool-test-token"
PORT = 18081


@dataclass
class IsolatedSpool:
    dsn: str
    url: str
    process: subprocess.Popen[bytes] | None = None
    shared: SpoolClient | None = None

    def start(self) -> None:
        env = {
            **os.environ,
            "SKEIN_CONTROL_DSN": self.dsn,
            "SKEIN_SPOOL_PORT": str(PORT),
            "SKEIN_SPOOL_TOKEN": TOKEN,
            "SKEIN_SPOOL_WORKERS": "1",  # one process: SIGKILL takes the whole spool down
            "SKEIN_SPOOL_RETRY_BASE_S": "0.05",
            "SKEIN_SPOOL_RETRY_CAP_S": "0.2",
            "SKEIN_SPOOL_PURGE_INTERVAL_S": "0.5",  # retention stays at its 7 days
        }
        with open(ROOT / ".run" / "logs" / "spool-test.log", "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "services.spool"], cwd=ROOT, env=env, stdout=log, stderr=log
            )
        wait_for(self.healthy, timeout=30, what="the test spool to answer")

    def healthy(self) -> bool:
        try:
            return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.shared is not None:
            self.shared.close()
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(20)

    def client(self) -> SpoolClient:
        """One client shared by the tests (httpx clients are thread-safe); closed at the end."""
        if self.shared is None:
            self.shared = SpoolClient(self.url, TOKEN, timeout=10)
        return self.shared

    def connect(self) -> Any:
        return psycopg2.connect(self.dsn)


@pytest.fixture(scope="module")
def spool() -> Iterator[IsolatedSpool]:
    with scratch_database(f"skein_spool_test_{uuid.uuid4().hex[:8]}") as dsn:
        with closing(db.connect(dsn)) as conn:
            migrations.migrate(conn)
        isolated = IsolatedSpool(dsn, f"http://127.0.0.1:{PORT}")
        isolated.start()
        yield isolated
        isolated.stop()


def new_client(spool: IsolatedSpool, destination: str | None = "postgres") -> int:
    with closing(spool.connect()) as conn:
        client_id = int(accounts.create_client(conn, "spool-test")["client_id"])
        if destination:
            destinations.set_destination(
                conn, "k", client_id, destination, {"dsn_params": {"host": "x"}}, {}
            )
    return client_id


def registration(
    client_id: int, table: str, partition: int, first: int, last: int, size: int = 1000
) -> BatchRegistration:
    return BatchRegistration(
        object_key=f"{client_id}/{table}/{partition}/{first:020d}-{last:020d}.jsonl.gz",
        client_id=client_id,
        table_name=table,
        partition=partition,
        first_offset=first,
        last_offset=last,
        record_count=last - first + 1,
        bytes=size,
        oldest_received_at="2026-11-26T10:00:00Z",
        newest_received_at="2026-11-26T10:00:01Z",
    )


def test_internal_token_is_required(spool: IsolatedSpool) -> None:
    r = httpx.get(f"{spool.url}/v1/stats")
    assert r.status_code == 401
    r = httpx.get(f"{spool.url}/v1/stats", headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401
    assert spool.client()._call("GET", "/v1/stats").status_code == 200


def test_the_client_raises_each_kind_of_failure_as_its_own_exception(
    spool: IsolatedSpool,
) -> None:
    """What the streamery and the loaders retry, give up on or report: a wrong token (401) is
    the deployment's mistake, an unreachable spool is unavailable, a 422 a refusal, a 409 a
    conflict (``test_registration_is_idempotent...``)."""
    with SpoolClient(spool.url, "wrong") as stranger, pytest.raises(SpoolHTTPError, match="401"):
        stranger.lease("postgres", "w")
    with SpoolClient("http://127.0.0.1:1", TOKEN) as nowhere, pytest.raises(SpoolUnavailable):
        nowhere.lease("postgres", "w")
    with pytest.raises(SpoolRefused, match="422"):
        spool.client().register(registration(1, "t", 0, 5, 4))  # last below first
    assert spool.client().high_water([12_345]) == {}


def test_registration_is_idempotent_and_advances_high_water(spool: IsolatedSpool) -> None:
    client = spool.client()
    cid = new_client(spool)
    first = client.register(registration(cid, "t", 3, 10, 19))
    again = client.register(registration(cid, "t", 3, 10, 19))
    assert first["created"] is True
    assert again == {"batch_id": first["batch_id"], "created": False}
    client.register(registration(cid, "t", 3, 25, 40))
    client.register(registration(cid, "u", 4, 7, 7))
    marks = client.high_water([3, 4, 5])
    assert marks[(3, cid, "t")] == 40
    assert marks[(4, cid, "u")] == 7
    assert not any(p == 5 for p, _, _ in marks)
    # A new object key starting at or below the mark is a re-read duplicate: refused.
    with pytest.raises(SpoolConflict, match="high-water"):
        client.register(registration(cid, "t", 3, 30, 50))
    with closing(spool.connect()) as conn:
        listed = operations.list_batches(conn, client_id=cid)
    assert [(b["table_name"], b["first_offset"]) for b in listed] == [
        ("t", 10),
        ("t", 25),
        ("u", 7),
    ]
    assert all(b["destination_type"] == "postgres" for b in listed)


def test_registrations_in_one_request_each_get_their_own_answer(spool: IsolatedSpool) -> None:
    """The streamery's bulk route: registrations in their order in one transaction; a
    conflict or an unknown client answers for its own registration only; a table's second
    batch may follow its first in the same request; a repeat is idempotent; the request ids
    and the destination type are stored as by the single route."""
    client = spool.client()
    cid = new_client(spool)
    client.register(registration(cid, "t", 1, 0, 9))  # t's mark is now 9
    first = replace(registration(cid, "u", 2, 0, 4), request_ids=("req-a", "req-b"))
    batches = [
        first,
        registration(cid, "t", 1, 5, 12),  # at or below t's mark: a conflict
        registration(987_654_321, "v", 3, 0, 1),  # no such client: refused
        registration(cid, "u", 2, 5, 8),  # u's second batch, after its first in this request
        registration(cid, "w", 4, 0, 0),
    ]
    answers = client.register_many(batches)
    assert [type(a).__name__ for a in answers] == [
        "dict",
        "SpoolConflict",
        "SpoolRefused",
        "dict",
        "dict",
    ]
    assert "high-water mark 9" in str(answers[1]) and "does not exist" in str(answers[2])
    assert all(a["created"] for a in answers if isinstance(a, dict))
    again = client.register_many([batches[0], batches[4]])
    assert again == [
        {"batch_id": answers[0]["batch_id"], "created": False},  # type: ignore[index]
        {"batch_id": answers[4]["batch_id"], "created": False},  # type: ignore[index]
    ]
    marks = client.high_water([1, 2, 3, 4])
    assert (marks[(1, cid, "t")], marks[(2, cid, "u")], marks[(4, cid, "w")]) == (9, 8, 0)
    assert not any(c == 987_654_321 for _, c, _ in marks)
    with closing(spool.connect()) as conn:
        listed = operations.list_batches(conn, client_id=cid)
        with conn.cursor() as cur:
            cur.execute(
                "SELECT request_ids, destination_type FROM batches WHERE object_key = %s",
                (first.object_key,),
            )
            stored = cur.fetchone()
    assert [(b["table_name"], b["first_offset"]) for b in listed] == [
        ("t", 0),
        ("u", 0),
        ("u", 5),
        ("w", 0),
    ]
    assert stored == (["req-a", "req-b"], "postgres")
    # A malformed registration refuses the whole request (422), as the single route would.
    auth = {"Authorization": f"Bearer {TOKEN}"}
    bulk = f"{spool.url}/v1/batches/bulk"
    bad = httpx.post(bulk, json={"batches": [{"object_key": "x"}]}, headers=auth)
    assert bad.status_code == 422
    assert httpx.post(bulk, json={"batches": []}, headers=auth).status_code == 422


def test_lease_is_one_table_in_offset_order_with_a_size_limit(spool: IsolatedSpool) -> None:
    client = spool.client()
    cid = new_client(spool, "bigquery")
    for i in range(5):
        client.register(registration(cid, "orders", 1, i * 10, i * 10 + 9, size=100))
    lease = client.lease("bigquery", "w1", max_bytes=250)
    assert lease is not None
    assert (lease.client_id, lease.table_name) == (cid, "orders")
    assert [b.first_offset for b in lease.batches] == [0, 10]
    # The table is leased: nobody else gets its later batches meanwhile.
    assert client.lease("bigquery", "w2") is None
    # Acknowledge and lease the next work in one round trip.
    rest = client.ack_and_lease(lease.lease_token, "bigquery", "w2")
    assert rest is not None and [b.first_offset for b in rest.batches] == [20, 30, 40]
    with closing(spool.connect()) as conn:
        states = [b["state"] for b in operations.list_batches(conn, client_id=cid)]
        with conn.cursor() as cur:
            cur.execute(
                "SELECT floor(extract(epoch FROM updated_at) * 1000000)::bigint"
                " FROM destinations WHERE client_id = %s",
                (cid,),
            )
            (version,) = cur.fetchone()  # type: ignore[misc]
    assert states == ["loaded", "loaded", "leased", "leased", "leased"]
    # Both the lease and the next lease name the destination's version (a loader with older
    # cached settings reads them again).
    assert lease.destination_version == rest.destination_version == version
    client.ack(rest.lease_token)
    assert client.lease("bigquery", "w2") is None


def test_expired_lease_returns_batches_and_stale_tokens_are_refused(spool: IsolatedSpool) -> None:
    client = spool.client()
    cid = new_client(spool, "redshift")
    client.register(registration(cid, "t", 0, 0, 9))
    first = client.lease("redshift", "slow-loader", lease_seconds=1)
    assert first is not None
    second = wait_for(
        lambda: client.lease("redshift", "other-loader", lease_seconds=60),
        timeout=15,
        what="the expired lease's batch to be leased again",
    )
    assert [b.batch_id for b in second.batches] == [b.batch_id for b in first.batches]
    assert second.batches[0].attempts == 2
    for call in (
        lambda: client.ack(first.lease_token),
        lambda: client.extend(first.lease_token),
        lambda: client.nack(first.lease_token, "transient", "late"),
        lambda: client.ack(str(uuid.uuid4())),
        lambda: client.ack("not-a-token"),
    ):
        with pytest.raises(SpoolConflict):
            call()
    assert client.extend(second.lease_token, 120)
    assert client.ack(second.lease_token) == 1


def test_partial_acks_keep_the_table_leased_until_every_batch_is_acked(
    spool: IsolatedSpool,
) -> None:
    client = spool.client()
    cid = new_client(spool, "redshift")
    for first in (0, 10, 20):
        client.register(registration(cid, "parts", 0, first, first + 9))
    held = client.lease("redshift", "loader", lease_seconds=60)
    assert held is not None and held.client_id == cid
    b1, b2, b3 = (b.batch_id for b in held.batches)

    assert client.ack(held.lease_token, [b1]) == 1
    assert client.lease("redshift", "another") is None  # the table is still leased
    for ids in ([b1], [b2, 2**62]):  # acked already / never part of this lease
        with pytest.raises(SpoolConflict):
            client.ack(held.lease_token, ids)
    assert client.ack(held.lease_token, [b2, b2]) == 1  # named twice, acked once
    assert client.ack(held.lease_token) == 1  # the rest: b3
    with pytest.raises(SpoolConflict):
        client.ack(held.lease_token)
    with closing(spool.connect()) as conn, conn.cursor() as cur:
        cur.execute("SELECT batch_id, state FROM batches WHERE client_id = %s", (cid,))
        assert dict(cur.fetchall()) == {b1: "loaded", b2: "loaded", b3: "loaded"}

    client.register(registration(cid, "parts", 0, 30, 39))  # the table is free again
    again = client.lease("redshift", "another")
    assert again is not None and again.client_id == cid and again.table_name == "parts"
    assert client.ack(again.lease_token) == 1
    # Out of the database's integer range: the request is refused (422), not a server error.
    response = httpx.post(
        f"{spool.url}/v1/leases/{again.lease_token}/ack",
        json={"batch_ids": [2**63]},
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    assert response.status_code == 422, response.text


def test_backoff_grows_with_attempts_and_transient_never_dies_in_window(
    spool: IsolatedSpool,
) -> None:
    cid = new_client(spool, "snowflake")
    client = spool.client()
    client.register(registration(cid, "t", 0, 0, 9))
    policy = RetryPolicy(base_s=2.0, cap_s=8.0, window_s=3600)
    waits = []
    with closing(spool.connect()) as conn:
        for attempt in range(1, 6):
            got = queue.lease(conn, "snowflake", "w", 60, 10, 10**9)
            assert got is not None, f"attempt {attempt}: batch not leasable"
            queue.nack(
                conn, got["lease_token"], "transient", "connection refused", None, policy, 0.999
            )
            batch = operations.get_batch(conn, got["batches"][0]["batch_id"])
            assert batch["state"] == "retry_wait"
            wait = (
                datetime.fromisoformat(batch["next_attempt_at"])
                - datetime.fromisoformat(batch["updated_at"])
            ).total_seconds()
            waits.append(round(wait, 1))
            with conn, conn.cursor() as cur:  # fast-forward the clock for this batch
                cur.execute(
                    "UPDATE batches SET next_attempt_at = now() WHERE batch_id = %s",
                    (batch["batch_id"],),
                )
    assert waits == [2.0, 4.0, 8.0, 8.0, 8.0]  # doubling, capped; jitter at its top
    # Failures older than the window park the batch, with the reason.
    with closing(spool.connect()) as conn:
        with conn, conn.cursor() as cur:
            cur.execute(
                """UPDATE batches SET first_failed_at = now() - interval '2 hours'
                   WHERE client_id = %s""",
                (cid,),
            )
        got = queue.lease(conn, "snowflake", "w", 60, 10, 10**9)
        assert got is not None
        queue.nack(conn, got["lease_token"], "transient", "still refused", None, policy, 0.5)
        batch = operations.get_batch(conn, got["batches"][0]["batch_id"])
    assert batch["state"] == "dead"
    assert "longer than the retry window" in batch["last_error"]


def test_a_successful_load_wakes_the_clients_tables_waiting_out_a_back_off(
    spool: IsolatedSpool,
) -> None:
    cid = new_client(spool, "snowflake")
    bystander = new_client(spool, "snowflake")
    client = spool.client()
    policy = RetryPolicy(base_s=600.0, cap_s=600.0, window_s=86400)
    with closing(spool.connect()) as conn:
        for who in (cid, bystander):  # an outage: each table's load fails and backs off 10 min
            client.register(registration(who, "stalled", 0, 0, 9))
            got = queue.lease(conn, "snowflake", "w", 60, 10, 10**9)
            assert got is not None and got["client_id"] == who
            queue.nack(conn, got["lease_token"], "transient", "refused", None, policy, 0.5)
        assert queue.lease(conn, "snowflake", "w", 60, 10, 10**9) is None  # all backing off
        # The destination is back: a new table of the client loads ...
        client.register(registration(cid, "fresh", 1, 0, 9))
        fresh = queue.lease(conn, "snowflake", "w", 60, 10, 10**9)
        assert fresh is not None and fresh["table_name"] == "fresh"
        assert queue.ack(conn, fresh["lease_token"], None) == 1
        # ... so its stalled table is due now, not in 10 minutes; another client's is not.
        woken = queue.lease(conn, "snowflake", "w", 60, 10, 10**9)
        assert woken is not None
        assert (woken["client_id"], woken["table_name"]) == (cid, "stalled")
        assert queue.ack(conn, woken["lease_token"], None) == 1
        assert queue.lease(conn, "snowflake", "w", 60, 10, 10**9) is None


def test_dead_batch_holds_back_its_table_only_until_retried_or_skipped(
    spool: IsolatedSpool,
) -> None:
    client = spool.client()
    cid = new_client(spool, "postgres")
    other = new_client(spool, "postgres")
    a1 = client.register(registration(cid, "a", 0, 0, 9))["batch_id"]
    a2 = client.register(registration(cid, "a", 0, 10, 19))["batch_id"]
    b1 = client.register(registration(other, "b", 1, 0, 9))["batch_id"]

    def lease_mine() -> Any:
        # Other tests' postgres batches may be waiting too: hand those back untouched.
        while True:
            got = client.lease("postgres", "w", max_batches=1)
            if got is None or got.client_id in (cid, other):
                return got
            client.ack(got.lease_token)

    leased = {}
    for _ in range(2):
        got = lease_mine()
        assert got is not None
        leased[got.table_name] = got
    assert set(leased) == {"a", "b"}
    assert [b.batch_id for b in leased["a"].batches] == [a1]
    client.nack(leased["a"].lease_token, "permanent", "column type cannot change")
    client.ack(leased["b"].lease_token)
    assert lease_mine() is None  # a2 waits behind the dead a1

    with closing(spool.connect()) as conn:
        assert operations.get_batch(conn, a1)["state"] == "dead"
        assert operations.get_batch(conn, a1)["last_error"] == "column type cannot change"
        assert operations.get_batch(conn, b1)["state"] == "loaded"
        assert operations.retry(conn, a1) == 1
    again = lease_mine()
    assert again is not None and [b.batch_id for b in again.batches] == [a1]
    client.nack(again.lease_token, "permanent", "still broken")
    with closing(spool.connect()) as conn:
        assert operations.skip(conn, a1) == 1
        with pytest.raises(queue.Conflict):
            operations.skip(conn, a2)  # not dead
    last = lease_mine()
    assert last is not None and [b.batch_id for b in last.batches] == [a2]
    client.ack(last.lease_token)


def test_a_client_without_a_destination_waits_until_one_is_set(spool: IsolatedSpool) -> None:
    client = spool.client()
    cid = new_client(spool, None)
    client.register(registration(cid, "t", 0, 0, 9))
    with closing(spool.connect()) as conn:
        assert operations.list_batches(conn, client_id=cid)[0]["destination_type"] is None
        destinations.set_destination(conn, "k", cid, "redshift", {"dsn_params": {"host": "x"}}, {})
    got = wait_for(lambda: client.lease("redshift", "w"), timeout=15, what="the batch leasable")
    assert got.client_id == cid
    client.ack(got.lease_token)


def run_leasers(
    spool: IsolatedSpool,
    clients: list[int],
    expected: dict[tuple[int, str], list[int]],
    leasers: int,
    kill_spool_after: int | None = None,
) -> dict[tuple[int, str], list[int]]:
    """Concurrent leasers 'load' everything; return each table's load order of first offsets."""
    loaded: dict[tuple[int, str], list[int]] = defaultdict(list)
    holders: dict[tuple[int, str], str] = {}
    violations: list[str] = []
    lock = threading.Lock()
    total = sum(len(v) for v in expected.values())
    done = threading.Event()
    killed = threading.Event()

    def retrying(call: Any, *, releases: bool = False) -> Any:
        """``call()`` until the spool answers. ``releases``: a release (nack) whose first try
        reached the spool killed before it answered finds its lease gone on the retry (409):
        the first try took effect, or the lease expired; either way its batches wait again."""
        deadline = time.monotonic() + 60
        unanswered = False
        while True:
            try:
                return call()
            except SpoolUnavailable:
                unanswered = True
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
            except SpoolConflict:
                if releases and unanswered:
                    return None
                raise

    def leaser(name: str) -> None:
        with SpoolClient(spool.url, TOKEN, timeout=10) as client:
            lease_all(name, client)

    def lease_all(name: str, client: SpoolClient) -> None:
        rng = random.Random(name)
        while not done.is_set():
            # A lease whose answer the killed spool never sent expires after this (nobody holds it).
            got = retrying(lambda: client.lease("postgres", name, lease_seconds=20, max_batches=3))
            if got is None:
                time.sleep(0.01)
                continue
            key = (got.client_id, got.table_name)
            if got.client_id not in clients:
                retrying(lambda got=got: client.ack(got.lease_token))  # another test's
                continue
            with lock:
                if key in holders:
                    violations.append(f"{key} leased by {name} while held by {holders[key]}")
                holders[key] = name
            if rng.random() < 0.1:
                with lock:
                    del holders[key]
                retrying(
                    lambda got=got: client.nack(got.lease_token, "transient", "simulated outage"),
                    releases=True,
                )
                continue
            with lock:
                loaded[key].extend(b.first_offset for b in got.batches)
                del holders[key]
                count = sum(len(v) for v in loaded.values())
                if kill_spool_after and count >= kill_spool_after and not killed.is_set():
                    killed.set()
                    spool.kill()
                    spool.start()
                if count >= total:
                    done.set()
            # SpoolConflict: the ack committed before the spool died; the retry finds it done.
            with contextlib.suppress(SpoolConflict):
                retrying(lambda got=got: client.ack(got.lease_token))

    threads = [threading.Thread(target=leaser, args=(f"leaser-{i}",)) for i in range(leasers)]
    for t in threads:
        t.start()
    done.wait(240)
    done.set()
    for t in threads:
        t.join(60)
    assert not violations, violations[:5]
    return loaded


def register_tables(
    spool: IsolatedSpool, clients: list[int], tables: int, per_table: int
) -> dict[tuple[int, str], list[int]]:
    client = spool.client()
    expected: dict[tuple[int, str], list[int]] = {}
    for t in range(tables):
        cid = clients[t % len(clients)]
        name = f"table_{t}"
        offsets = [i * 100 for i in range(per_table)]
        for first in offsets:
            client.register(registration(cid, name, t % 12, first, first + 99))
        expected[(cid, name)] = offsets
    return expected


def test_eight_leasers_load_1000_batches_exactly_once_in_order(spool: IsolatedSpool) -> None:
    clients = [new_client(spool) for _ in range(5)]
    expected = register_tables(spool, clients, tables=50, per_table=20)
    loaded = run_leasers(spool, clients, expected, leasers=8)
    assert dict(loaded) == expected  # every batch exactly once, each table in offset order
    with closing(spool.connect()) as conn:
        states = {b["state"] for c in clients for b in operations.list_batches(conn, client_id=c)}
    assert states == {"loaded"}


@pytest.mark.slow
def test_restarting_the_spool_mid_run_loses_and_duplicates_nothing(spool: IsolatedSpool) -> None:
    clients = [new_client(spool) for _ in range(3)]
    expected = register_tables(spool, clients, tables=20, per_table=10)
    loaded = run_leasers(spool, clients, expected, leasers=4, kill_spool_after=60)
    assert dict(loaded) == expected
    with closing(spool.connect()) as conn:
        states = {b["state"] for c in clients for b in operations.list_batches(conn, client_id=c)}
    assert states == {"loaded"}


def test_metrics_show_depth_and_oldest_age(spool: IsolatedSpool) -> None:
    client = spool.client()
    cid = new_client(spool, "bigquery")
    client.register(registration(cid, "m", 0, 0, 9))
    text = httpx.get(f"{spool.url}/metrics").text
    assert 'skein_spool_batches{destination_type="bigquery",state="pending"}' in text
    assert "skein_spool_oldest_pending_age_seconds" in text
    assert "skein_spool_db_up 1.0" in text
    got = client.lease("bigquery", "w")
    assert got is not None
    client.ack(got.lease_token)


def test_retention_deletes_the_objects_of_old_loaded_batches_and_nothing_else(
    spool: IsolatedSpool,
) -> None:
    settings = SharedSettings()
    s3 = s3_client(settings)

    def stored(key: str) -> bool:
        try:
            s3.head_object(Bucket=settings.s3_bucket, Key=key)
        except s3.exceptions.ClientError:
            return False
        return True

    client = spool.client()
    cid = new_client(spool, "snowflake")  # no other test here leases snowflake work
    run = uuid.uuid4().hex[:6]
    names = ["old", "recent", "dead", "skipped", "pending"]
    regs = {n: registration(cid, f"ret_{n}_{run}", p, 0, 9) for p, n in enumerate(names)}
    for reg in regs.values():
        s3.put_object(Bucket=settings.s3_bucket, Key=reg.object_key, Body=b"batch")
    ids = {n: client.register(regs[n])["batch_id"] for n in names[:4]}
    for _ in range(4):
        got = client.lease("snowflake", "w", max_batches=1)
        assert got is not None and got.client_id == cid
        name = got.table_name.split("_")[1]
        if name in ("old", "recent"):
            client.ack(got.lease_token)
        else:
            client.nack(got.lease_token, "permanent", "cannot load")
    ids["pending"] = client.register(regs["pending"])["batch_id"]
    with closing(spool.connect()) as conn:
        assert operations.skip(conn, ids["skipped"]) == 1
        with conn, conn.cursor() as cur:  # all but "recent" finished 8 days ago
            cur.execute(
                "UPDATE batches SET updated_at = now() - interval '8 days' "
                "WHERE batch_id = ANY(%s)",
                ([ids[n] for n in names if n != "recent"],),
            )

    # The spool's housekeeping (every 0.5 s here, 7 days' retention) deletes the old loaded
    # one: its object, then the row's mark and the counter.
    def purged_count() -> float:
        text = httpx.get(f"{spool.url}/metrics").text
        lines = [ln for ln in text.splitlines() if ln.startswith("skein_spool_purged_batches")]
        return float(lines[0].split()[-1]) if lines else 0.0

    wait_for(lambda: purged_count() >= 1, timeout=30, what="a purge counted")
    assert not stored(regs["old"].object_key)
    with closing(spool.connect()) as conn:
        rows = {n: operations.get_batch(conn, ids[n]) for n in names}
    assert rows["old"]["purged_at"] is not None
    for n in ("recent", "dead", "skipped", "pending"):
        assert stored(regs[n].object_key), n
        assert rows[n]["purged_at"] is None, n
    assert [rows[n]["state"] for n in names] == ["loaded", "loaded", "dead", "skipped", "pending"]

    # An operator's purge with a shorter retention takes the recent loaded one, and only it.
    env = {**os.environ, "SKEIN_CONTROL_DSN": spool.dsn}
    cli = [str(ROOT / ".venv" / "bin" / "skein"), "spool", "purge"]
    done = subprocess.run(
        [*cli, "--older-than-days", "0.00001"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert orjson.loads(done.stdout)["purged"] >= 1
    assert not stored(regs["recent"].object_key)
    for n in ("dead", "skipped", "pending"):
        assert stored(regs[n].object_key), n
    refused = subprocess.run(
        [*cli, "--older-than-days", "0"], env=env, capture_output=True, text=True, timeout=60
    )
    assert refused.returncode == 1
    assert "retention is off" in orjson.loads(refused.stdout)["error"]


def test_one_clients_backlog_never_holds_more_than_its_share_of_leases(
    spool: IsolatedSpool,
) -> None:
    """A client with 50 ready tables gets at most MAX_LEASES_PER_CLIENT live leases per
    destination type; a quiet client's one table is leased next, before the backlog's third."""
    with closing(spool.connect()) as conn, conn, conn.cursor() as cur:
        cur.execute("UPDATE batches SET state = 'skipped' WHERE state IN ('pending', 'retry_wait')")
    busy = new_client(spool, "redshift")
    quiet = new_client(spool, "redshift")
    client = spool.client()
    for n in range(50):
        client.register(registration(busy, f"backlog_{n}", n % 4, 0, 9))
    with closing(spool.connect()) as conn:
        first = [queue.lease(conn, "redshift", "w", 60, 10, 10**9) for _ in range(2)]
        assert all(got is not None and got["client_id"] == busy for got in first)
        # At its cap: nothing more for the busy client, however much it has waiting.
        assert queue.lease(conn, "redshift", "w", 60, 10, 10**9) is None
        client.register(registration(quiet, "orders", 5, 0, 9))
        got = queue.lease(conn, "redshift", "w", 60, 10, 10**9)
        assert got is not None and got["client_id"] == quiet
        # A larger cap lets the backlog take a third worker; an ack frees a place too.
        third = queue.lease(conn, "redshift", "w", 60, 10, 10**9, max_per_client=3)
        assert third is not None and third["client_id"] == busy
        acked, following = queue.ack_and_lease(
            conn, first[0]["lease_token"], None, "redshift", "w", 60, 10, 10**9, 3
        )
        assert acked == 1 and following is not None and following["client_id"] == busy


def test_a_lease_may_hold_several_tables_of_one_client_within_its_budget(
    spool: IsolatedSpool,
) -> None:
    """A loader asking for up to 3 tables gets its client's next ready tables under one token,
    oldest head first, within the lease's batch budget; the lease counts once against the
    client's cap; each table is acknowledged (or nacked) on its own, and the tables are
    released together when none of the token's batches is leased any more."""
    with closing(spool.connect()) as conn, conn, conn.cursor() as cur:
        cur.execute("UPDATE batches SET state = 'skipped' WHERE state IN ('pending', 'retry_wait')")
    a, b = new_client(spool, "snowflake"), new_client(spool, "snowflake")
    client = spool.client()
    client.register(registration(a, "t0", 0, 0, 9))
    client.register(registration(a, "t0", 0, 10, 19))
    client.register(registration(a, "t1", 1, 0, 9))
    client.register(registration(a, "t2", 2, 0, 9))
    client.register(registration(b, "u", 3, 0, 9))
    got = client.lease("snowflake", "w1", max_batches=3, max_tables=3)
    assert got is not None and got.client_id == a
    assert [(t.table_name, [x.first_offset for x in t.batches]) for t in got.tables] == [
        ("t0", [0, 10]),
        ("t1", [0]),  # the budget of 3 batches: t2 waits for another lease
    ]
    assert {t.lease_token for t in got.tables} == {got.lease_token}
    assert all(t.destination_version == got.destination_version for t in got.tables)
    # b, holding no lease, goes next; then a's lease of two tables counts once against its cap
    # of 2, so its last table is leasable beside it.
    with closing(spool.connect()) as conn:
        second = queue.lease(conn, "snowflake", "w2", 60, 10, 10**9, max_per_client=2)
        assert second is not None and second["client_id"] == b
        third = queue.lease(conn, "snowflake", "w3", 60, 10, 10**9, max_per_client=2)
        assert third is not None and (third["client_id"], third["table_name"]) == (a, "t2")
        assert queue.lease(conn, "snowflake", "w4", 60, 10, 10**9, max_per_client=2) is None
    t0, t1 = got.tables
    client.nack(got.lease_token, "transient", "t1 failed", [t1.batches[0].batch_id])
    # t0 still leased: nobody gets t1 meanwhile, even once its back-off is over.
    with closing(spool.connect()) as conn, conn, conn.cursor() as cur:
        cur.execute(
            "UPDATE batches SET next_attempt_at = now() WHERE batch_id = %s",
            (t1.batches[0].batch_id,),
        )
    assert client.lease("snowflake", "w5") is None
    following = client.acks_and_lease(
        got.lease_token,
        [([x.batch_id for x in t0.batches], {"num_rows": 20})],
        "snowflake",
        "w1",
        max_tables=3,
    )
    # Released together: t1 (due again) comes back in the next lease.
    assert following is not None and (following.client_id, following.table_name) == (a, "t1")
    with closing(spool.connect()) as conn:
        states = {
            (r["table_name"], r["first_offset"]): r["state"]
            for r in operations.list_batches(conn, client_id=a)
        }
    assert states == {
        ("t0", 0): "loaded",
        ("t0", 10): "loaded",
        ("t1", 0): "leased",
        ("t2", 0): "leased",
    }
    # A stale token's acks are a conflict, as a one-table ack's.
    with pytest.raises(SpoolConflict):
        client.acks_and_lease(got.lease_token, [([t0.batches[0].batch_id], None)], None, "w1")


def test_among_equals_the_client_served_least_recently_goes_first(spool: IsolatedSpool) -> None:
    with closing(spool.connect()) as conn, conn, conn.cursor() as cur:
        cur.execute("UPDATE batches SET state = 'skipped' WHERE state IN ('pending', 'retry_wait')")
    a, b = new_client(spool, "bigquery"), new_client(spool, "bigquery")
    client = spool.client()
    # a's data is older, so plain oldest-first would serve a twice in a row.
    for n in range(3):
        client.register(registration(a, f"t{n}", n, 0, 9))
    for n in range(3):
        client.register(registration(b, f"t{n}", n, 0, 9))
    order = []
    with closing(spool.connect()) as conn:
        for _ in range(4):
            got = queue.lease(conn, "bigquery", "w", 60, 10, 10**9)
            assert got is not None
            order.append(got["client_id"])
            queue.ack(conn, got["lease_token"], None)
    assert order == [a, b, a, b]


def test_tables_idle_past_retention_are_forgotten_and_others_kept(spool: IsolatedSpool) -> None:
    with closing(spool.connect()) as conn, conn, conn.cursor() as cur:
        cur.execute("UPDATE batches SET state = 'skipped' WHERE state IN ('pending', 'retry_wait')")
    cid = new_client(spool, "snowflake")
    client = spool.client()
    client.register(registration(cid, "idle", 0, 0, 9))
    client.register(registration(cid, "busy", 1, 0, 9))
    with closing(spool.connect()) as conn:
        got = queue.lease(conn, "snowflake", "w", 60, 10, 10**9)
        assert got is not None
        queue.ack(conn, got["lease_token"], None)  # one of the two tables loaded
        client_limits.admit_tables(conn, cid, ["idle", "busy"], 10)
        with conn, conn.cursor() as cur:
            cur.execute(
                "UPDATE batches SET created_at = now() - interval '8 days' WHERE client_id = %s",
                (cid,),
            )
        assert operations.prune_idle_tables(conn, 7 * 86400) == 1
        assert operations.prune_idle_tables(conn, 7 * 86400) == 0
        with conn, conn.cursor() as cur:
            for table in ("table_leases", "high_water", "client_tables"):
                cur.execute(
                    psycopg2.sql.SQL("SELECT table_name FROM {} WHERE client_id = %s").format(
                        psycopg2.sql.Identifier(table)
                    ),
                    (cid,),
                )
                left = {r[0] for r in cur.fetchall()}
                assert left == {"busy" if got["table_name"] == "idle" else "idle"}, table
        # A table sent to again registers anew, above its old offsets or not.
        client.register(
            registration(cid, got["table_name"], got["batches"][0]["partition"], 10, 19)
        )


def _events(spool: IsolatedSpool, client_id: int) -> list[tuple[str, dict[str, Any]]]:
    with closing(spool.connect()) as conn, conn, conn.cursor() as cur:
        cur.execute(
            "SELECT type, payload FROM hook_events WHERE client_id = %s ORDER BY created_at, type",
            (client_id,),
        )
        return [(t, p) for t, p in cur.fetchall()]


def test_the_ack_writes_its_load_event_in_its_own_transaction_and_only_for_hooked_clients(
    spool: IsolatedSpool,
) -> None:
    """The outbox: load.completed (and records.rejected) exist exactly when the ack committed;
    a stale ack writes nothing; a client without hooks gets no event rows at all."""
    with closing(spool.connect()) as conn, conn, conn.cursor() as cur:
        cur.execute("UPDATE batches SET state = 'skipped' WHERE state IN ('pending', 'retry_wait')")
    hooked, plain = new_client(spool, "snowflake"), new_client(spool, "snowflake")
    policy = netpolicy.NetworkPolicy(netpolicy.parse_allowed("127.0.0.1:8790-8799"))
    with closing(spool.connect()) as conn:
        made = hooks.create_hook(
            conn,
            policy,
            "k",
            hooked,
            "http://127.0.0.1:8790/h",
            ["load.completed", "records.rejected", "batch.dead"],
        )
    assert made["secret"].startswith("whsec_")
    client = spool.client()
    client.register(registration(hooked, "orders", 0, 0, 9))
    client.register(registration(plain, "orders", 1, 0, 9))
    report = {"num_rows": 8, "num_rows_rejected": 2, "destination_table_name": "orders"}
    for _ in range(2):
        got = client.lease("snowflake", "w")
        assert got is not None
        assert client.ack(got.lease_token, report=report) == 1
        with pytest.raises(SpoolConflict):
            client.ack(got.lease_token, report=report)  # stale: no second event
    assert _events(spool, plain) == []
    events = _events(spool, hooked)
    assert [t for t, _ in events] == ["load.completed", "records.rejected"]
    body = events[0][1]
    assert body["tables"] == [
        {
            "destination_table_name": "orders",
            "num_rows": 8,
            "num_rows_rejected": 2,
            "num_records": 10,
        }
    ]
    assert body["client_id"] == hooked and len(body["batch_ids"]) == 1
    with closing(spool.connect()) as conn, conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM hook_deliveries WHERE client_id = %s", (hooked,))
        assert cur.fetchone() == (2,)  # one hook, two events

    # A permanent failure parks the batch and tells the hook, in the same transaction.
    client.register(registration(hooked, "customers", 2, 0, 9))
    got = client.lease("snowflake", "w")
    assert got is not None
    client.nack(got.lease_token, "permanent", "column type refused")
    kinds = [t for t, _ in _events(spool, hooked)]
    assert kinds.count("batch.dead") == 1
    dead = next(p for t, p in _events(spool, hooked) if t == "batch.dead")
    assert dead["table_name"] == "customers" and dead["error"] == "column type refused"
