"""The chaos run: records pushed through the gate while brokers, services and stores die and
come back (``tests/e2e/test_chaos.py`` runs it at scale 1, ``tests/e2e/test_scale.py`` at 2 in
its scaled stack).

A load generator (``support.load``) pushes records for several clients into keyed and append-only
tables, retrying each request unchanged on 503/429 or a dropped connection, and keeps a ledger of
every acknowledged record. Meanwhile two lanes of faults (``support.faults``) SIGKILL and restart a
broker, the streamery, the spool, the Postgres loader, a gate worker and the whole gate, and stop
the S3 server and the demo warehouse for 30 s, at seeded random moments. Once the load stops and
everything is back, every acknowledged record must be in its client's warehouse exactly once
(keyed tables: the state of the greatest sequence; append-only tables: the exact multiset),
nothing from a rejected request may be there, and no batch may be dead-lettered.

    SKEIN_CHAOS_SECONDS  how long faults are injected (default 30; `make chaos`: 900)
    SKEIN_CHAOS_SEED     the faults' and records' random seed (default: the clock; printed)
    SKEIN_CHAOS_CLIENTS  how many clients push (default 3)
    SKEIN_CHAOS_RATE     records per second offered in all (default 1500)
    SKEIN_CHAOS_DRAIN_S  how long the pipeline may take to drain afterwards (default 900: the
                         spool's back-off cap is 600 s)
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, closing, contextmanager
from random import Random
from typing import Any

import psycopg2
from psycopg2 import sql

from common import db
from support.faults import ChaosLane, kill_faults, outage_faults
from support.load import POISON_ID, POISON_NOTE, TABLES, Ledger, LoadGenerator
from support.stack import RUN_DIR
from support.tenants import Tenant, new_tenants

SECONDS = float(os.environ.get("SKEIN_CHAOS_SECONDS", "30"))
SEED = int(os.environ.get("SKEIN_CHAOS_SEED", str(time.time_ns() % 1_000_000)))
CLIENTS = int(os.environ.get("SKEIN_CHAOS_CLIENTS", "3"))
RATE = float(os.environ.get("SKEIN_CHAOS_RATE", "1500"))
DRAIN_S = float(os.environ.get("SKEIN_CHAOS_DRAIN_S", "900"))
TIMEOUT_S = int(SECONDS + DRAIN_S + 600)  # a test's pytest timeout

LOG = RUN_DIR / "logs" / "chaos.log"
KEYED_COLUMNS = {"accounts": ["v", "name", "meta__n"], "orders": ["v", "name"]}


class Report:
    """The run's log: printed in the summary (and by pytest on failure), and appended as it
    happens to .run/logs/chaos.log, to follow a long run with tail -f."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.lines: list[str] = []
        self.lock = threading.Lock()
        self.file = LOG.open("a", encoding="utf-8")

    def __call__(self, line: str) -> None:
        stamped = f"[chaos +{time.monotonic() - self.started:6.1f}s] {line}"
        with self.lock:
            self.lines.append(stamped)
            self.file.write(f"{time.strftime('%H:%M:%S')} {stamped}\n")
            self.file.flush()
        print(stamped, flush=True)


def warehouse_rows(tenant: Tenant, table: str) -> list[tuple[Any, ...]]:
    if TABLES[table]:
        columns = ["id", "_sdc_sequence", *KEYED_COLUMNS[table]]
    else:
        columns = ["ev", "n", "note"]
    query = sql.SQL("SELECT {} FROM {}").format(
        sql.SQL(", ").join(map(sql.Identifier, columns)), sql.Identifier(tenant.schema, table)
    )
    try:
        with closing(tenant.connect()) as conn, conn.cursor() as cur:
            cur.execute(query)
            return list(cur.fetchall())
    except psycopg2.errors.UndefinedTable:
        return []


def compare(tenants: list[Tenant], ledger: Ledger) -> dict[str, int]:
    """Differences between the warehouse and the ledger, by kind, over every client's tables."""
    diff: Counter[str] = Counter()
    for tenant in tenants:
        for table, keys in TABLES.items():
            got = warehouse_rows(tenant, table)
            diff["rows"] += len(got)
            if keys:
                want = ledger.keyed.get((tenant.client_id, table), {})
                have = {row[0]: row[1:] for row in got}
                diff["missing"] += len(want.keys() - have.keys())
                diff["poison"] += sum(1 for k in have if k >= POISON_ID)
                diff["unexpected"] += sum(1 for k in have if k < POISON_ID and k not in want)
                for key, (seq, data) in want.items():
                    if key in have:
                        expected = (seq, data["v"], data["name"], data.get("meta", {}).get("n"))
                        diff["stale"] += have[key] != expected[: len(have[key])]
            else:
                bag = ledger.appended.get((tenant.client_id, table), Counter())
                landed = Counter(got)
                diff["missing"] += sum((bag - landed).values())
                extra = landed - bag
                diff["poison"] += sum(n for row, n in extra.items() if row[2] == POISON_NOTE)
                diff["unexpected"] += sum(n for row, n in extra.items() if row[2] != POISON_NOTE)
    return dict(diff)


def batch_states(tenants: list[Tenant]) -> dict[str, int]:
    with closing(db.connect()) as conn, conn, conn.cursor() as cur:
        cur.execute(
            "SELECT state, count(*) FROM batches WHERE client_id = ANY(%s) GROUP BY state",
            ([t.client_id for t in tenants],),
        )
        return dict(cur.fetchall())


def dead_batches(tenants: list[Tenant]) -> list[tuple[Any, ...]]:
    with closing(db.connect()) as conn, conn, conn.cursor() as cur:
        cur.execute(
            """SELECT batch_id, client_id, table_name, state, last_error FROM batches
               WHERE client_id = ANY(%s) AND state IN ('dead', 'skipped')""",
            ([t.client_id for t in tenants],),
        )
        return cur.fetchall()


def rejected(tenants: list[Tenant]) -> int:
    total = 0
    for tenant in tenants:
        try:
            with closing(tenant.connect()) as conn, conn.cursor() as cur:
                cur.execute(
                    sql.SQL("SELECT count(*) FROM {}").format(
                        sql.Identifier(tenant.schema, "_sdc_rejected")
                    )
                )
                row = cur.fetchone()
                assert row is not None
                total += int(row[0])
        except psycopg2.errors.UndefinedTable:
            pass
    return total


def drained(tenants: list[Tenant], ledger: Ledger, report: Report) -> dict[str, int]:
    """Wait until the warehouse matches the ledger and every batch is loaded; then look once
    more after a batch age, so that a late duplicate would still be seen."""
    deadline = time.monotonic() + DRAIN_S
    last_print = 0.0
    settled_at: float | None = None
    while True:
        dead = dead_batches(tenants)
        assert not dead, f"dead-lettered batches: {dead}"
        try:
            diff = compare(tenants, ledger)
        except psycopg2.OperationalError as exc:  # the warehouse is still starting
            diff = {"warehouse unavailable": 1}
            report(f"drain: {exc}".strip())
        states = batch_states(tenants)
        exact = diff.get("rows", 0) > 0 and not any(
            diff.get(k) for k in ("missing", "poison", "unexpected", "stale")
        )
        done = exact and set(states) == {"loaded"}
        if done and settled_at is not None and time.monotonic() >= settled_at:
            return diff
        if done and settled_at is None:
            settled_at = time.monotonic() + 10
        if not done:
            settled_at = None
        if time.monotonic() > deadline:
            raise AssertionError(f"not drained after {DRAIN_S:.0f}s: {diff}, batches {states}")
        if time.monotonic() - last_print > 15:
            report(f"drain: warehouse vs ledger {diff}, batches {states}")
            last_print = time.monotonic()
        time.sleep(2)


@contextmanager
def reporting(say: Callable[[], AbstractContextManager[Any]]) -> Iterator[Report]:
    """A run's Report; ``say`` prints past pytest's capture (its capsys.disabled)."""
    with say():
        print(f"\n[chaos] seed {SEED} (SKEIN_CHAOS_SEED), {SECONDS:.0f}s of faults", flush=True)
    r = Report()
    r(f"seed {SEED}, {SECONDS:.0f}s of faults")
    try:
        yield r
    finally:
        r.file.close()
        with say():
            print("\n" + "\n".join(r.lines), flush=True)


def run(report: Report, scale: int) -> None:
    """One chaos run on the stack as it is (``scale`` instances of every service, for the log):
    load and faults for SECONDS, then every acknowledged record must be in the warehouse exactly
    once."""
    tenants = new_tenants(CLIENTS, prefix="e2e")
    ledger = Ledger()
    load = LoadGenerator(tenants, ledger, SEED, RATE)
    rng = Random(SEED)
    until = time.monotonic() + SECONDS
    kills, outages = kill_faults(), outage_faults()
    # Outages in later rounds leave the pipeline 20-90 s to recover: back to back, every batch's
    # back-off would grow to the spool's cap (600 s) and the run would mostly measure waiting.
    lanes = [
        ChaosLane("kill", kills, kills, Random(rng.random()), until, report, (0.5, 4), (1, 10)),
        ChaosLane(
            "outage", outages[:1], outages, Random(rng.random()), until, report, (1, 8), (20, 90)
        ),
    ]
    threads = [threading.Thread(target=lane.run, name=lane.name, daemon=True) for lane in lanes]
    report(
        f"clients {[t.client_id for t in tenants]}, {RATE:.0f} records/s offered, "
        f"{scale} instance(s) of every service"
    )
    load.start()
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=SECONDS + 600)
    finally:
        for lane in lanes:
            lane.abort.set()
        for thread in threads:
            thread.join(timeout=300)
        for lane in lanes:
            lane.restore_all()
        load.finish()
    report(f"faults injected: {dict(Counter(f for lane in lanes for f in lane.injected))}")
    report(
        f"requests acknowledged {ledger.acked_requests}, records {ledger.acked_records}; "
        f"rejected requests {dict(ledger.rejected_requests)} ({ledger.rejected_records} "
        f"records); retries {dict(ledger.retries)}"
    )
    for lane in lanes:
        assert lane.error is None, f"the {lane.name} lane failed: {lane.error!r}"
    assert not load.failures, load.failures
    assert ledger.acked_requests > 0 and sum(ledger.rejected_requests.values()) > 0

    diff = drained(tenants, ledger, report)
    keyed = sum(len(v) for v in ledger.keyed.values())
    appended = sum(sum(v.values()) for v in ledger.appended.values())
    rejected_rows = rejected(tenants)
    report(
        f"warehouse holds exactly the ledger: {diff['rows']} rows "
        f"({keyed} keyed rows at their greatest sequence, {appended} append-only rows), "
        f"no poison, batches {batch_states(tenants)}, _sdc_rejected {rejected_rows}"
    )
    assert rejected_rows == 0
