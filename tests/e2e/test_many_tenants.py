"""Many tenants on one platform (the tenant boundary): hundreds of clients share one warehouse
server within the loader's connection cap, one client's backlog does not starve a quiet one,
and a warehouse that hangs, locks or stalls costs only its own client."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import psycopg2
import pytest
from confluent_kafka import Producer
from psycopg2 import sql

from common import db
from common.s3 import client as s3_client
from common.settings import SharedSettings
from common.wire import Header, TableRecords, encode_messages, message_key
from support.processes import stop_process
from support.stack import ROOT, stack, wait_for
from support.tenants import Tenant, batches_of, count_rows, drop_schemas, new_tenants, push
from support.warehouse import DEMO_WAREHOUSE

pytestmark = pytest.mark.e2e

LOADER_APP = "skein-loader-postgres"


class ConnectionSampler:
    """Counts the loader's sessions on the demo warehouse every 50 ms (pg_stat_activity)."""

    def __init__(self) -> None:
        self.peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ConnectionSampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        with closing(psycopg2.connect(**DEMO_WAREHOUSE)) as conn:
            conn.autocommit = True
            with conn.cursor() as cur:
                while not self._stop.wait(0.05):
                    cur.execute(
                        "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
                        (LOADER_APP,),
                    )
                    self.peak = max(self.peak, int(cur.fetchone()[0]))  # type: ignore[index]
                    self.samples += 1


def test_three_hundred_clients_share_one_warehouse_within_the_connection_cap() -> None:
    """300 clients, own schema each, 3 tables each, on the demo warehouse (max_connections
    200): every row lands, the loader never holds more than its cap (16), no batch retries."""
    tenants = new_tenants(300, prefix="cap")
    tables = ("orders", "users", "events")
    jobs = [(t, table) for t in tenants for table in tables]
    try:
        with ConnectionSampler() as sampler:
            with httpx.Client() as http, ThreadPoolExecutor(8) as pool:
                list(
                    pool.map(
                        lambda job: push(
                            job[0], job[1], [{"id": i, "v": i} for i in range(4)], http=http
                        ),
                        jobs,
                    )
                )

            def landed() -> bool:  # one connection: the catalog lists every schema's tables
                with closing(tenants[0].connect()) as conn, conn.cursor() as cur:
                    cur.execute(
                        "SELECT count(*) FROM pg_tables WHERE schemaname = ANY(%s)"
                        " AND tablename = ANY(%s)",
                        ([t.schema for t in tenants], list(tables)),
                    )
                    return int(cur.fetchone()[0]) == len(jobs)  # type: ignore[index]

            wait_for(landed, timeout=600, interval=1, what="every client's three tables")
        for t in tenants[::50]:
            assert all(count_rows(t, table) == 4 for table in tables)
        open_batches = batches_of([t.client_id for t in tenants])
        assert {b["state"] for b in open_batches} == {"loaded"}
        assert not [b for b in open_batches if b["last_error"]], "a batch went to retry_wait"
        print(f"300 clients x 3 tables: loader sessions peaked at {sampler.peak} (cap 16)")
        assert sampler.samples > 100
        assert 0 < sampler.peak <= 16, f"loader sessions peaked at {sampler.peak}"
    finally:
        drop_schemas(tenants)


# ------------------------------------------------------------------- hostile destinations


class HangingProxy:
    """A TCP listener that accepts and never answers while ``hang`` is set; afterwards it
    forwards new connections to the demo warehouse (the obstacle is gone)."""

    def __init__(self) -> None:
        self.hang = True
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self.port = self._sock.getsockname()[1]
        self._held: list[socket.socket] = []
        self._forwarded: list[socket.socket] = []  # closed by close(), not left to the GC
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            if self.hang:
                self._held.append(conn)  # never read, never answered
                continue
            upstream = socket.create_connection(("127.0.0.1", int(DEMO_WAREHOUSE["port"])))
            self._forwarded += [conn, upstream]
            for a, b in ((conn, upstream), (upstream, conn)):
                threading.Thread(target=_pipe, args=(a, b), daemon=True).start()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)  # wakes the accept() of the thread
        self._sock.close()
        for conn in [*self._held, *self._forwarded]:
            conn.close()


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := src.recv(65536):
            dst.sendall(data)
    with contextlib.suppress(OSError):
        dst.shutdown(socket.SHUT_WR)


def run_loader(tmp: Path, **env: str) -> subprocess.Popen[bytes]:
    settings = {
        "SKEIN_LOADER_POSTGRES_METRICS_PORT": "19113",
        # Short limits so the test sees a whole cycle of give-up and back-off in a minute.
        "SKEIN_LOADER_POSTGRES_CONNECT_TIMEOUT_S": "4",
        "SKEIN_LOADER_POSTGRES_LOCK_TIMEOUT_S": "6",
        "SKEIN_LOADER_POSTGRES_STATEMENT_TIMEOUT_S": "8",
        "SKEIN_LOADER_POSTGRES_STALLED_LOAD_S": "2",
        **env,
    }
    with open(ROOT / ".run" / "logs" / "loader-hostile.log", "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "services.loaders.postgres"],
            cwd=ROOT,
            env={**os.environ, **settings},
            stdout=log,
            stderr=log,
        )


@contextlib.contextmanager
def own_loader(tmp: Path) -> Iterator[subprocess.Popen[bytes]]:
    stack("stop", "loaders.postgres")
    loader = run_loader(tmp)
    try:
        yield loader
    finally:
        stop_process(loader)
        stack("start", "loaders.postgres")


def freshness(tenant: Tenant, table: str) -> list[float]:
    """Seconds from just before each record's request to its load (``_sdc_batched_at``)."""
    with closing(tenant.connect()) as conn, conn.cursor() as cur:
        cur.execute(
            sql.SQL("SELECT extract(epoch FROM _sdc_batched_at) - sent FROM {} ORDER BY id").format(
                sql.Identifier(tenant.schema, table)
            )
        )
        return [float(r[0]) for r in cur.fetchall()]


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def test_a_hung_a_locked_and_a_stalled_warehouse_cost_only_their_own_clients(
    tmp_path: Path,
) -> None:
    proxy = HangingProxy()
    hung_dsn = {**DEMO_WAREHOUSE, "port": str(proxy.port)}
    hung = new_tenants(1, hung_dsn, prefix="hung")[0]
    locked, stalled, *healthy = new_tenants(6, prefix="hostile")
    everyone = [hung, locked, stalled, *healthy]
    hung_seen = replace(hung, dsn=DEMO_WAREHOUSE)  # its rows, read past the proxy
    holder = psycopg2.connect(**DEMO_WAREHOUSE)
    try:
        with own_loader(tmp_path), httpx.Client() as http:
            # The locked and stalled clients' tables exist first, as a customer's would.
            for t in (locked, stalled):
                push(t, "orders", [{"id": 0, "sent": time.time()}], http=http)
            wait_for(
                lambda: count_rows(locked, "orders") == 1 and count_rows(stalled, "orders") == 1,
                timeout=120,
                what="the first rows of the locked and stalled clients",
            )
            with closing(locked.connect()) as conn, conn, conn.cursor() as cur:
                cur.execute(
                    sql.SQL(
                        "CREATE FUNCTION {}.nap() RETURNS trigger LANGUAGE plpgsql AS "
                        "$$ BEGIN PERFORM pg_sleep(3600); RETURN NEW; END $$"
                    ).format(sql.Identifier(stalled.schema))
                )
                cur.execute(
                    sql.SQL(
                        "CREATE TRIGGER nap BEFORE INSERT OR UPDATE ON {} "
                        "FOR EACH ROW EXECUTE FUNCTION {}.nap()"
                    ).format(
                        sql.Identifier(stalled.schema, "orders"),
                        sql.Identifier(stalled.schema),
                    )
                )
            with holder.cursor() as cur:  # held until the obstacle goes
                cur.execute(
                    sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(
                        sql.Identifier(locked.schema, "orders")
                    )
                )
            # Every obstacle in place: the hostile clients send, the healthy ones keep sending.
            for t in (hung, locked, stalled):
                push(t, "orders", [{"id": i, "sent": time.time()} for i in range(1, 21)], http=http)
            started = time.monotonic()
            seq = 0
            while time.monotonic() - started < 30:
                seq += 1
                for t in healthy:
                    push(t, "orders", [{"id": seq, "sent": time.time()}], first_seq=seq, http=http)
                time.sleep(1)
            wait_for(
                lambda: all(count_rows(t, "orders") == seq for t in healthy),
                timeout=60,
                what="the healthy clients' rows",
            )
            lags = [lag for t in healthy for lag in freshness(t, "orders")]
            print(f"hostile destinations: healthy clients' p99 freshness {p99(lags):.2f} s")
            assert p99(lags) <= 15, f"healthy clients' p99 freshness {p99(lags):.1f} s"
            # Nothing of theirs loaded meanwhile (read from the spool: the locked table cannot
            # even be counted while the lock is held).
            for t, before in ((hung, 0), (locked, 1), (stalled, 1)):
                loaded = [b for b in batches_of([t.client_id]) if b["state"] == "loaded"]
                assert len(loaded) == before, (t.client_id, loaded)
            # The obstacles go: the stuck clients' batches load, exactly once.
            proxy.hang = False
            holder.rollback()
            with closing(stalled.connect()) as conn, conn, conn.cursor() as cur:
                cur.execute(
                    sql.SQL("DROP TRIGGER nap ON {}").format(
                        sql.Identifier(stalled.schema, "orders")
                    )
                )
            for t, expected in ((hung_seen, 20), (locked, 21), (stalled, 21)):
                wait_for(
                    lambda t=t, expected=expected: count_rows(t, "orders") == expected,
                    timeout=300,
                    interval=2,
                    what=f"client {t.client_id}'s rows once its obstacle is gone",
                )
            for t in (hung_seen, locked, stalled):
                with closing(t.connect()) as conn, conn.cursor() as cur:
                    cur.execute(
                        sql.SQL("SELECT count(*), count(DISTINCT batch_id) FROM {}").format(
                            sql.Identifier(t.schema, "_sdc_loads")
                        )
                    )
                    total, distinct = cur.fetchone()  # type: ignore[misc]
                    assert total == distinct
            states = {b["state"] for b in batches_of([t.client_id for t in everyone])}
            assert states == {"loaded"}, states
    finally:
        holder.close()
        proxy.close()
        drop_schemas([hung_seen, locked, stalled, *healthy])


def test_a_destination_aimed_at_the_control_database_never_reaches_it() -> None:
    """Stored past the CLI's check (as a DNS change would make it), a destination naming the
    control database is refused again by the loader at connect time: the batch is parked with
    the reason, and nothing is written to the control database."""
    control_dsn = {"host": "127.0.0.1", "port": "5432", "dbname": "skein", "user": "postgres"}
    tenant = new_tenants(1, control_dsn, prefix="aimed")[0]
    table = f"stolen_{tenant.client_id}"
    with httpx.Client() as http:
        push(tenant, table, [{"id": 1, "sent": time.time()}], http=http)

    def parked() -> list[dict[str, Any]]:
        return [b for b in batches_of([tenant.client_id]) if b["state"] == "dead"]

    dead = wait_for(parked, timeout=120, what="the batch parked by the network policy")
    assert "network policy" in dead[0]["last_error"]
    assert "control database" in dead[0]["last_error"]
    with closing(psycopg2.connect(**control_dsn)) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = %s"
            " OR table_schema = %s",
            (table, tenant.schema),
        )
        assert cur.fetchone()[0] == 0  # type: ignore[index]


@pytest.mark.timeout(900)
def test_one_clients_backlog_does_not_starve_a_quiet_client() -> None:
    """One client sends a backlog of 2M records over 50 tables while a quiet client posts 10
    records every second: the quiet client's records reach its warehouse within 10 s (p99),
    because the backlog holds at most SKEIN_SPOOL_MAX_LEASES_PER_CLIENT leases and the quiet
    client, holding none, is leased first."""
    total = int(os.environ.get("SKEIN_FAIRNESS_RECORDS", "2000000"))
    busy, quiet = new_tenants(2, prefix="fair")
    per_request = 2000
    tables = [f"backlog_{n}" for n in range(50)]
    jobs = [
        (tables[i % len(tables)], first) for i, first in enumerate(range(0, total, per_request))
    ]
    done = threading.Event()

    def backlog() -> None:
        try:
            with httpx.Client() as http, ThreadPoolExecutor(6) as pool:
                list(
                    pool.map(
                        lambda job: push(
                            busy,
                            job[0],
                            [{"id": i, "v": "x" * 40} for i in range(job[1], job[1] + per_request)],
                            first_seq=job[1] + 1,
                            http=http,
                        ),
                        jobs,
                    )
                )
        finally:
            done.set()

    sender = threading.Thread(target=backlog)
    sender.start()
    seq = 0
    try:
        with httpx.Client() as http:
            started = time.monotonic()
            backlog_rows = 0
            # Through the whole backlog: while it is sent, and while it loads.
            while not done.is_set() or backlog_rows < total:
                if seq % 5 == 0:
                    backlog_rows = sum(count_rows(busy, t) for t in tables)
                seq += 1
                push(
                    quiet,
                    "orders",
                    [{"id": seq * 10 + i, "sent": time.time()} for i in range(10)],
                    first_seq=seq * 10,
                    http=http,
                )
                time.sleep(max(0.0, started + seq - time.monotonic()))
                if seq > 400:
                    break
        sender.join()
        wait_for(
            lambda: count_rows(quiet, "orders") == seq * 10,
            timeout=120,
            what="every quiet record",
        )
        lags = freshness(quiet, "orders")
        print(
            f"fairness: backlog {total} records over {len(tables)} tables; quiet client "
            f"p50 {sorted(lags)[len(lags) // 2]:.2f} s, p99 {p99(lags):.2f} s over {len(lags)}"
        )
        assert p99(lags) <= 10, f"quiet client's p99 {p99(lags):.1f} s over {len(lags)} records"
        wait_for(
            lambda: sum(count_rows(busy, t) for t in tables) == total,
            timeout=600,
            interval=5,
            what="the whole backlog",
        )
    finally:
        done.set()
        sender.join()
        drop_schemas([busy, quiet])


def test_a_forged_message_for_a_missing_client_is_dead_lettered_and_consumption_goes_on() -> None:
    """A message naming a client that does not exist (written straight to the topic, as a
    forged or stale message would be) cannot be registered: the streamery keeps it as a dead
    batch with the reason (its object stays in S3) and goes on; other clients' records load."""
    settings = SharedSettings()
    with closing(db.connect()) as conn, conn.cursor() as cur:
        cur.execute("SELECT coalesce(max(client_id), 0) + 100000 FROM clients")
        missing = int(cur.fetchone()[0])  # type: ignore[index]
    header = Header(
        missing, "forged", ("id",), None, None, "2026-12-04T00:00:00.000000Z", "forged", "push"
    )
    producer = Producer({**settings.kafka_config(), "acks": "all"})
    for value in encode_messages(
        TableRecords(header, [b'{"action":"upsert","sequence":1,"data":{"id":1}}']), 1 << 20
    ):
        producer.produce(settings.topic, value=value, key=message_key(missing, "forged"))
    assert producer.flush(30) == 0
    tenant = new_tenants(1, prefix="after")[0]
    try:
        with httpx.Client() as http:
            # Several tables, so that some share the forged message's partition.
            for n in range(12):
                push(tenant, f"t{n}", [{"id": 1, "sent": time.time()}], http=http)

        def dead() -> list[dict[str, Any]]:
            return [b for b in batches_of([missing]) if b["state"] == "dead"]

        parked = wait_for(dead, timeout=60, what="the forged batch, dead-lettered")
        assert f"client {missing} does not exist" in parked[0]["last_error"]
        s3 = s3_client(settings)
        assert s3.head_object(Bucket=settings.s3_bucket, Key=parked[0]["object_key"])
        wait_for(
            lambda: all(count_rows(tenant, f"t{n}") == 1 for n in range(12)),
            timeout=60,
            what="the other client's rows, after the forged message",
        )
        listed = subprocess.run(
            [
                str(ROOT / ".venv/bin/skein"),
                "spool",
                "ls",
                "--state",
                "dead",
                "--client",
                str(missing),
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert parked[0]["object_key"] in listed
    finally:
        drop_schemas([tenant])
