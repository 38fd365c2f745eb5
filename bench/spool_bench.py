"""Spool lease + ack cycles per second with concurrent leasers, on its own database and process.

    .venv/bin/python bench/spool_bench.py [--leasers 4] [--batches 2000] [--tables 100]

Baseline in the same run: the same leasers doing authenticated HTTP round trips to the spool
(GET /v1/stats, one indexed query), i.e. what the HTTP + pool path alone costs.
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
import psycopg2

from common import control, db
from common import migrate as migrations
from common.spool_client import BatchRegistration, SpoolClient

ROOT = Path(__file__).resolve().parent.parent
ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--leasers", type=int, default=4)
    parser.add_argument("--batches", type=int, default=2000)
    parser.add_argument("--tables", type=int, default=100)
    args = parser.parse_args()

    name = f"skein_spool_bench_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(ADMIN_DSN)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    dsn = f"postgresql://postgres@127.0.0.1:5432/{name}"
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
                cid = int(control.create_client(conn, "bench")["client_id"])
                control.set_destination(conn, "k", cid, "postgres", {"dsn_params": {}}, {})
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

        with SpoolClient(url, TOKEN) as client:
            began = time.monotonic()
            per_table = args.batches // args.tables
            for t in range(args.tables):
                for i in range(per_table):
                    client.register(
                        BatchRegistration(
                            f"{clients[t % 10]}/t{t}/0/{i:020d}-{i:020d}.jsonl.gz",
                            clients[t % 10],
                            f"t{t}",
                            t % 12,
                            i,
                            i,
                            100,
                            10_000,
                            "2026-11-26T10:00:00Z",
                            "2026-11-26T10:00:00Z",
                        )
                    )
            registered = per_table * args.tables
            reg_rate = registered / (time.monotonic() - began)

        # Each leaser is its own process, as each loader is.
        began = time.monotonic()
        with multiprocessing.Pool(args.leasers) as pool:
            cycles = sum(pool.map(leaser, [(url, f"leaser-{i}") for i in range(args.leasers)]))
        elapsed = time.monotonic() - began
        rate = cycles / elapsed
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
    finally:
        if process is not None:
            process.terminate()
            process.wait(20)
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        admin.close()


if __name__ == "__main__":
    main()
