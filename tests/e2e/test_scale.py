"""Several instances of every service (the scaled profile, `stack.sh scale 2`): a rolling restart
under load that no client notices, streameries and loaders joining and leaving under load
without a lost, duplicated or doubly-owned record, and the chaos run (``support.chaos``) at
scale 2.

The module brings the running local stack to two instances of every Skein service (the gate, the
spool and the control service behind HAProxy on their usual ports) and back to one at its end.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from confluent_kafka.admin import AdminClient

from common import db
from common.settings import SharedSettings
from support import chaos
from support.stack import GATE, scaled, stack, wait_for
from support.tenants import Tenant, new_tenant, rows
from support.warehouse import DEMO_WAREHOUSE

SCHEMA = {"properties": {"id": {"type": "integer"}, "n": {"type": "integer"}}}


@pytest.fixture(scope="module", autouse=True)
def two_of_each() -> Iterator[None]:
    with scaled(2):
        yield


@dataclass
class Load:
    """Clients posting keyed records through HAProxy at a steady rate; every answer counted."""

    tenant: Tenant
    table: str
    workers: int = 5
    per_request: int = 100
    interval_s: float = 0.1  # per worker: workers * per_request / interval_s records/s
    acked: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> Load:
        for w in range(self.workers):
            thread = threading.Thread(target=self._run, args=(w,), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)

    def _run(self, worker: int) -> None:
        headers = {"Authorization": f"Bearer {self.tenant.token}"}
        sent = 0
        with httpx.Client(base_url=GATE, headers=headers, timeout=30) as client:
            while not self._stop.is_set():
                began = time.monotonic()
                ids = [worker * 10**9 + sent + i for i in range(self.per_request)]
                body = {
                    "table_name": self.table,
                    "schema": SCHEMA,
                    "key_names": ["id"],
                    "messages": [
                        {"action": "upsert", "sequence": i, "data": {"id": i, "n": worker}}
                        for i in ids
                    ],
                }
                try:
                    answer = client.post("/v2/import/batch", json=body)
                except httpx.HTTPError as exc:  # a failed connection is an error a client sees
                    self.errors.append(f"{type(exc).__name__}: {exc}")
                else:
                    if answer.is_success:
                        with self._lock:
                            self.acked.extend(ids)
                    else:
                        self.errors.append(f"{answer.status_code}: {answer.text[:200]}")
                sent += self.per_request
                time.sleep(max(0.0, self.interval_s - (time.monotonic() - began)))

    def landed(self) -> list[int]:
        """Every acknowledged record's row, once: waits for the pipeline to drain."""
        expected = len(self.acked)

        def all_there() -> list[tuple[Any, ...]] | None:
            got = rows(self.tenant, self.table)
            return got if len(got) >= expected else None

        found = wait_for(all_there, timeout=180, interval=1, what=f"{expected} rows")
        return sorted(r[0] for r in found or [])


def batch_ranges(client_id: int, table: str) -> dict[int, list[tuple[int, int]]]:
    """The client's batches of ``table`` by partition: (first offset, last offset), in order."""
    with closing(db.connect()) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT partition, first_offset, last_offset FROM batches"
            " WHERE client_id = %s AND table_name = %s AND replay_of IS NULL"
            " ORDER BY partition, first_offset",
            (client_id, table),
        )
        found: dict[int, list[tuple[int, int]]] = {}
        for partition, first, last in cur.fetchall():
            found.setdefault(partition, []).append((first, last))
    return found


def owners() -> dict[int, list[str]]:
    """Each records-topic partition and the streamery group members that own it."""
    settings = SharedSettings()
    admin = AdminClient(settings.kafka_config())
    group = admin.describe_consumer_groups(["skein-streamery"])["skein-streamery"].result()
    owned: dict[int, list[str]] = {}
    for member in group.members:
        for tp in member.assignment.topic_partitions:
            if tp.topic == settings.topic:
                owned.setdefault(tp.partition, []).append(member.member_id)
    return owned


def each_partition_has_one_owner(instances: int) -> bool:
    owned = owners()
    members = {m for ms in owned.values() for m in ms}
    return (
        sorted(owned) == list(range(12))
        and all(len(ms) == 1 for ms in owned.values())
        and len(members) == instances
    )


def assert_exactly_once(load: Load) -> None:
    assert load.errors == [], load.errors[:10]
    assert load.acked, "the load sent nothing"
    assert load.landed() == sorted(load.acked)  # none lost, none twice (keyed: by id)
    for partition, ranges in batch_ranges(load.tenant.client_id, load.table).items():
        for (_, last), (first, _) in itertools.pairwise(ranges):
            assert first > last, f"partition {partition}: batches overlap at offset {first}"


# --- tests ---------------------------------------------------------------------------------------


def test_a_rolling_restart_under_load_is_invisible_to_clients() -> None:
    load = Load(new_tenant("e2e", DEMO_WAREHOUSE), "rolling").start()  # 5,000 records/s
    try:
        time.sleep(3)
        stack("rolling-restart", timeout=900)
        time.sleep(3)
    finally:
        load.stop()
    assert_exactly_once(load)
    assert len(load.acked) >= 5_000 * 10  # it ran through the whole restart


def test_streameries_join_and_leave_under_load_without_loss_or_duplicates() -> None:
    load = Load(new_tenant("e2e", DEMO_WAREHOUSE), "rebalanced", workers=3).start()
    try:
        stack("stop", "streamery@2")  # 2 -> 1
        wait_for(lambda: each_partition_has_one_owner(1), timeout=60, what="one streamery")
        stack("start", "streamery@2")
        stack("start", "streamery@3")  # 1 -> 3
        wait_for(lambda: each_partition_has_one_owner(3), timeout=60, what="three streameries")
        time.sleep(3)
        stack("stop", "streamery@3")  # 3 -> 2
        wait_for(lambda: each_partition_has_one_owner(2), timeout=60, what="two streameries")
        time.sleep(3)
    finally:
        load.stop()
        stack("start", "streamery@2")
        stack("stop", "streamery@3")
    assert_exactly_once(load)


def test_loaders_join_and_leave_under_load_without_loss_or_duplicates() -> None:
    load = Load(new_tenant("e2e", DEMO_WAREHOUSE), "reloaded", workers=3).start()
    try:
        stack("stop", "loaders.postgres@2")  # 2 -> 1
        time.sleep(3)
        stack("start", "loaders.postgres@2")
        stack("start", "loaders.postgres@3")  # 1 -> 3
        time.sleep(5)
        stack("stop", "loaders.postgres@2")
        stack("stop", "loaders.postgres@3")  # 3 -> 1
        time.sleep(3)
    finally:
        load.stop()
        stack("start", "loaders.postgres@2")
    assert_exactly_once(load)
    # Every batch was loaded once: the warehouse's own ledger of loaded batches has each once.
    with closing(db.connect()) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT count(*), count(*) FILTER (WHERE state = 'loaded') FROM batches"
            " WHERE client_id = %s",
            (load.tenant.client_id,),
        )
        total, loaded = cur.fetchone() or (0, 0)
    assert total == loaded > 0


@pytest.mark.slow
@pytest.mark.timeout(chaos.TIMEOUT_S)
def test_acknowledged_records_land_exactly_once_through_chaos_at_scale_2(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with chaos.reporting(capsys.disabled) as report:
        chaos.run(report, 2)
