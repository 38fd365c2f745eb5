"""Spool lease + ack cycles per second with concurrent leasers, on its own database and process.

    .venv/bin/python bench/spool_bench.py [--leasers 4] [--batches 2000] [--tables 100]
                                          [--idle-tables 100000]

Baseline in the same run: the same leasers doing authenticated HTTP round trips to the spool
(GET /v1/stats, one indexed query), i.e. what the HTTP + pool path alone costs.

Idle tables: the same lease + ack cycles again with ``--idle-tables`` tables that have only
loaded batches (their ``table_leases``, ``high_water`` and batch rows, as a long-lived spool
holds), next to the first run's 100; a lease should cost the same however many tables sit idle
(target ratio >= 0.8).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import subprocess
import sys
import threading
import time
import uuid
from contextlib import closing
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # support/ (not installed)
from common import db
from common import migrate as migrations
from common.spool_client import BatchRegistration, SpoolClient
from services.control import accounts, destinations
from support.stack import ROOT, scratch_database, use_stack_passwords

use_stack_passwords()  # the stack's clusters' generated passwords

PORT = 18082
TOKEN = "bench-token"


def timed_threads(n: int, work: object, seconds: float | None = None) -> float:
    threads = [threading.Thread(target=work) for _ in range(n)]  # type: ignore[arg-type]
    began = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.monotonic() - began


def leaser(args: tuple[str, str]) -> int:
    """Lease and acknowledge until nothing is left; return the number of cycles."""
    url, name = args
    cycles = 0
    with SpoolClient(url, TOKEN) as c:
        got = c.lease("postgres", name, max_batches=1)
        while got is not None:
            # ack + next lease in one round trip, as the loaders do
            got = c.ack_and_lease(got.lease_token, "postgres", name, max_batches=1)
            cycles += 1
    return cycles


def add_idle(dsn: str, clients: list[int], first: int, last: int) -> None:
    """Tables ``first``..``last``-1 that have only a loaded batch, as a long-lived spool holds."""
    with closing(db.connect(dsn)) as conn, conn, conn.cursor() as cur:
        cur.execute(
            """INSERT INTO batches (client_id, destination_type, table_name, object_key,
                   partition, first_offset, last_offset, record_count, bytes,
                   oldest_received_at, newest_received_at, state, loaded_at)
               SELECT (%(clients)s::bigint[])[1 + g %% 10], 'postgres', 'idle_' || g,
                      'idle/' || g, g %% 12, 0, 0, 1, 100, now(), now(), 'loaded', now()
               FROM generate_series(%(first)s, %(last)s - 1) g""",
            {"clients": clients, "first": first, "last": last},
        )
        cur.execute(
            """INSERT INTO table_leases (client_id, table_name)
               SELECT (%(clients)s::bigint[])[1 + g %% 10], 'idle_' || g
               FROM generate_series(%(first)s, %(last)s - 1) g""",
            {"clients": clients, "first": first, "last": last},
        )
        cur.execute(
            """INSERT INTO high_water (partition, client_id, table_name, last_offset)
               SELECT g %% 12, (%(clients)s::bigint[])[1 + g %% 10], 'idle_' || g, 0
               FROM generate_series(%(first)s, %(last)s - 1) g""",
            {"clients": clients, "first": first, "last": last},
        )
        cur.execute("ANALYZE")


def register(
    url: str, clients: list[int], tables: int, batches: int, round_: str
) -> tuple[int, float]:
    with SpoolClient(url, TOKEN) as client:
        began = time.monotonic()
        per_table = batches // tables
        for t in range(tables):
            for i in range(per_table):
                client.register(
                    BatchRegistration(
                        f"{clients[t % 10]}/{round_}{t}/0/{i:020d}-{i:020d}.jsonl.gz",
                        clients[t % 10],
                        f"{round_}{t}",
                        t % 12,
                        i,
                        i,
                        100,
                        10_000,
                        "2026-11-26T10:00:00Z",
                        "2026-11-26T10:00:00Z",
                    )
                )
        registered = per_table * tables
        return registered, registered / (time.monotonic() - began)


def lease_all(url: str, leasers: int) -> tuple[int, float, float]:
    """Each leaser is its own process, as each loader is."""
    began = time.monotonic()
    with multiprocessing.Pool(leasers) as pool:
        cycles = sum(pool.map(leaser, [(url, f"leaser-{i}") for i in range(leasers)]))
    elapsed = time.monotonic() - began
    return cycles, cycles / elapsed, elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--leasers", type=int, default=4)
    parser.add_argument("--batches", type=int, default=2000)
    parser.add_argument("--tables", type=int, default=100)
    parser.add_argument("--idle-tables", type=int, default=100_000)
    args = parser.parse_args()

    with scratch_database(f"skein_spool_bench_{uuid.uuid4().hex[:8]}") as dsn:
        measure(args, dsn)


def measure(args: argparse.Namespace, dsn: str) -> None:
    """The spool on the fresh control database ``dsn``: registrations, lease cycles with 100 and
    with ``--idle-tables`` tables, and the baseline; printed."""
    env = {
        **os.environ,
        "SKEIN_CONTROL_DSN": dsn,
        "SKEIN_SPOOL_PORT": str(PORT),
        "SKEIN_SPOOL_TOKEN": TOKEN,
    }
    process = None
    try:
        with closing(db.connect(dsn)) as conn:
            migrations.migrate(conn)
            clients = []
            for _ in range(10):
                cid = int(accounts.create_client(conn, "bench")["client_id"])
                destinations.set_destination(conn, "k", cid, "postgres", {"dsn_params": {}}, {})
                clients.append(cid)
        process = subprocess.Popen(
            [sys.executable, "-m", "services.spool"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        url = f"http://127.0.0.1:{PORT}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/healthz").status_code == 200:
                    break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.1)

        add_idle(dsn, clients, 0, 100)
        registered, reg_rate = register(url, clients, args.tables, args.batches, "a")
        cycles, rate, elapsed = lease_all(url, args.leasers)
        add_idle(dsn, clients, 100, args.idle_tables)
        register(url, clients, args.tables, args.batches, "b")
        idle_cycles, idle_rate, _ = lease_all(url, args.leasers)
        lock = threading.Lock()

        calls = 0

        def baseline() -> None:
            nonlocal calls
            with SpoolClient(url, TOKEN) as c:
                for _ in range(max(50, cycles // args.leasers)):
                    c._call("GET", "/v1/stats")
                    with lock:
                        calls += 1

        base_elapsed = timed_threads(args.leasers, baseline)
        base_rate = calls / base_elapsed
        print(f"registered {registered} batches in {args.tables} tables:", end=" ")
        print(f"{reg_rate:,.0f} registrations/s (1 client)")
        print(f"{args.leasers} leasers: {cycles} lease+ack cycles in {elapsed:.1f}s", end=" ")
        print(f"= {rate:,.0f} cycles/s (target >= 500)")
        print(f"baseline, {args.leasers} threads of GET /v1/stats: {base_rate:,.0f} requests/s")
        print(
            f"ratio cycles/s : baseline requests/s = {rate / base_rate:.2f} (a cycle is 2 requests)"
        )
        print(
            f"with {args.idle_tables:,} idle tables: {idle_cycles} cycles = {idle_rate:,.0f} "
            f"cycles/s against {rate:,.0f} with 100: ratio {idle_rate / rate:.2f} (target >= 0.8)"
        )
    finally:
        if process is not None:
            process.terminate()
            process.wait(20)


if __name__ == "__main__":
    main()
