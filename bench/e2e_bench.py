"""End to end through the HTTP gate into Postgres, sustained, against dlt in the same run.

    .venv/bin/python bench/e2e_bench.py [--seconds 180] [--rate 40000] [--fresh-rate 10000]
        [--closed-records 1500000] [--closed-clients 16] [--closed-warmup 300000]
        [--only closed]

0. Closed loop: ``--closed-records`` new records (unique keys) into one table, sent by
   ``--closed-clients`` concurrent clients each posting its next 1,000-record batch as soon as
   the last is answered, after ``--closed-warmup`` records into another table that are not
   measured (a just-started broker spends seconds of CPU compiling its hot paths); records/s
   from the first request to the last row committed, and the CPU-seconds the whole pipeline
   (gate, brokers, S3, streamery, spool, loader, both Postgres clusters) spent per GB of record
   JSON (``cpu_account.py``).
1. Sustained: 1,000-record batches (~300-byte flat records, key ``id``) offered to the gate at
   ``--rate`` records/s for ``--seconds``; every 10 s it prints records accepted, rows loaded
   (sum of ``_sdc_loads.records``), the streamery's consumer lag and the spool's depth, then waits
   for the backlog to drain. Sustained rate = rows loaded / (last load - first accept).
2. Freshness: a second run at ``--fresh-rate`` records/s; p50/p99 of
   ``_sdc_batched_at - _sdc_received_at`` (gate acceptance to row committed) over its rows.
3. dlt (PyPI ``dlt[postgres]``, in its own cached virtualenv) loads the same records into the
   same Postgres with ``write_disposition="merge"`` on ``id``; records/s and the ratio, and its
   CPU-seconds per GB of the same record JSON (dlt's process, measured inside it around
   ``pipeline.run``, plus the Postgres processes over its run): the closed loop's figure over
   dlt's is the CPU ratio (target <= 0.25).
Bench schemas are dropped afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import subprocess
import sys
import time
import uuid
from contextlib import closing
from pathlib import Path

import httpx
import orjson
import psycopg2
from psycopg2 import sql

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # support/ (not installed)
from bench_records import make_record
from cpu_account import CpuWindow, postgres_pids, stack_groups
from gate_bench import RECORDS_PER_BATCH as BATCH
from gate_bench import RawHttp, open_loop, requests_for
from kafka_tools import trim_consumed
from tenants_bench import Progress

from common import db
from common.settings import SharedSettings
from support.stack import ROOT, demo_warehouse_secrets
from support.tenants import new_tenant
from support.warehouse import DEMO_WAREHOUSE, warehouse

DLT_VERSION = "dlt[postgres]==1.31.0"
ID_SPACE = 200_000  # ids cycle over this many keys: the table stays bounded


def orders_body(messages: list[dict[str, object]]) -> bytes:
    """One Import API batch into ``orders``, keyed on ``id``."""
    return orjson.dumps(
        {
            "table_name": "orders",
            "schema": {"properties": {"id": {"type": "integer"}}},
            "key_names": ["id"],
            "messages": messages,
        }
    )


def requests(token: str, rounds: int) -> list[bytes]:
    """``rounds`` batch requests whose ids cycle over ``ID_SPACE`` with rising sequences."""
    rng = random.Random(3)
    records = [make_record(i, rng) for i in range(ID_SPACE)]
    bodies = []
    for n in range(rounds):
        start = (n * BATCH) % ID_SPACE
        messages = [
            {"action": "upsert", "sequence": n * BATCH + i, "data": records[start + i]}
            for i in range(BATCH)
        ]
        bodies.append(orders_body(messages))
    return requests_for(token, bodies)


def loaded_rows(schema: str) -> int:
    try:
        with closing(warehouse()) as conn, conn.cursor() as cur:
            cur.execute(
                sql.SQL("SELECT coalesce(sum(records), 0) FROM {}").format(
                    sql.Identifier(schema, "_sdc_loads")
                )
            )
            row = cur.fetchone()
            return int(row[0]) if row else 0
    except psycopg2.Error:
        return 0


def pipeline_state() -> tuple[float, int]:
    """(streamery consumer lag in records, spool batches waiting)."""
    lag = 0.0
    try:
        text = httpx.get("http://127.0.0.1:9102/metrics", timeout=5).text
        for line in text.splitlines():
            if line.startswith("skein_streamery_lag_records"):
                lag += float(line.rsplit(" ", 1)[1])
    except (httpx.HTTPError, ValueError):
        lag = float("nan")
    with closing(db.connect()) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT count(*) FROM batches WHERE destination_type = 'postgres'"
            " AND state IN ('pending', 'leased', 'retry_wait')"
        )
        row = cur.fetchone()
    return lag, int(row[0]) if row else 0


def sustained(rate: float, seconds: float, schema: str) -> dict[str, float]:
    token = new_tenant("bench-e2e", DEMO_WAREHOUSE, schema=schema).token
    reqs = requests(token, rounds=int(ID_SPACE / BATCH))
    began = time.monotonic()
    result: dict[str, float] = {}

    async def run() -> None:
        task = asyncio.create_task(open_loop(reqs, rate, seconds))
        while not task.done():
            await asyncio.sleep(10)
            lag, depth = await asyncio.to_thread(pipeline_state)
            rows = await asyncio.to_thread(loaded_rows, schema)
            print(
                f"  t={time.monotonic() - began:5.0f}s loaded {rows:>10,} rows;"
                f" streamery lag {lag:>8,.0f} records; spool waiting {depth:>4} batches",
                flush=True,
            )
        offered = task.result()
        result["accepted"], result["failed"] = offered["accepted"], offered["errors"]

    asyncio.run(run())
    accepted = int(result["accepted"])
    offered_s = time.monotonic() - began
    deadline = time.monotonic() + 600
    while loaded_rows(schema) < accepted and time.monotonic() < deadline:
        time.sleep(2)
    done_s = time.monotonic() - began
    loaded = loaded_rows(schema)
    return {
        "accepted": accepted,
        "failed": result["failed"],
        "loaded": loaded,
        "offered_s": offered_s,
        "drained_s": done_s,
        "rate": loaded / done_s,
    }


def closed_requests(token: str, count: int) -> tuple[list[bytes], int]:
    """Requests carrying ``count`` records with unique keys, and the bytes of their records'
    JSON (the per-GB denominator, counted as dlt's is)."""
    rng = random.Random(11)
    bodies: list[bytes] = []
    record_bytes = 0
    for start in range(0, count, BATCH):
        data = [make_record(i, rng) for i in range(start, min(count, start + BATCH))]
        record_bytes += sum(len(orjson.dumps(d)) for d in data)
        messages = [{"action": "upsert", "sequence": 1, "data": d} for d in data]
        bodies.append(orders_body(messages))
    return requests_for(token, bodies), record_bytes


async def send_all(requests: list[bytes], clients: int) -> None:
    """Each request once, ``clients`` at a time; a 429/503 is sent again after a pause."""
    queue = iter(requests)

    async def client() -> None:
        http = RawHttp()
        for request in queue:
            while (status := await http.post(request)) != 202:
                if status not in (429, 503):
                    raise SystemExit(f"gate answered {status}")
                await asyncio.sleep(0.2)
        await http.close()

    await asyncio.gather(*(client() for _ in range(clients)))


def pipeline_cpu(cpu: CpuWindow) -> float:
    """CPU-seconds the stack's services spent in the window (not this bench's own)."""
    return sum(s for name, s in cpu.seconds().items() if name != "this bench")


def land(requests: list[bytes], clients: int, schema: str, records: int) -> float:
    """Send ``requests`` ``clients`` at a time; the monotonic time the last one was answered,
    once all ``records`` rows are in ``schema``."""
    asyncio.run(send_all(requests, clients))
    sent = time.monotonic()
    progress = Progress({schema: records})  # one connection: the probe costs the warehouse little
    try:
        while (missing := progress.missing()) > 0:
            if time.monotonic() - sent > 900:
                raise SystemExit(f"closed loop: {missing:,} rows missing after 15 minutes")
            time.sleep(0.2)
    finally:
        progress.close()
    return sent


def closed(records: int, clients: int, schema: str, warmup: int) -> dict[str, float]:
    if warmup:
        # The brokers' JIT compiles their hot paths in the first few hundred thousand records
        # after a start (with C2, ~4 CPU-s in the window; C1, the local stack's default, less):
        # a one-off, not what a running pipeline spends.
        warm_schema = f"{schema}_warm"
        token = new_tenant("bench-e2e-warm", DEMO_WAREHOUSE, schema=warm_schema).token
        try:
            land(closed_requests(token, warmup)[0], clients, warm_schema, warmup)
        finally:
            drop(warm_schema)
    token = new_tenant("bench-e2e", DEMO_WAREHOUSE, schema=schema).token
    reqs, record_bytes = closed_requests(token, records)
    cpu = CpuWindow(stack_groups())
    cpu.start()
    began = time.monotonic()
    sent = land(reqs, clients, schema, records)
    cpu.stop()
    elapsed = time.monotonic() - began
    gb = record_bytes / 1e9
    print(cpu.report(gb), flush=True)
    return {
        "rate": records / elapsed,
        "send_rate": records / (sent - began),
        "drain_s": elapsed - (sent - began),
        "cpu_per_gb": pipeline_cpu(cpu) / gb,
    }


def freshness(schema: str) -> tuple[float, float]:
    with closing(warehouse()) as conn, conn.cursor() as cur:
        cur.execute(
            sql.SQL(
                "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY d), "
                "percentile_cont(0.99) WITHIN GROUP (ORDER BY d) FROM "
                "(SELECT extract(epoch FROM _sdc_batched_at - _sdc_received_at) d FROM {}) x"
            ).format(sql.Identifier(schema, "orders"))
        )
        p50, p99 = cur.fetchone()  # type: ignore[misc]
    return float(p50), float(p99)


DLT_SCRIPT = """
import json, os, sys, time, random, dlt
sys.path.insert(0, sys.argv[3])
from bench_records import make_record
rng = random.Random(3)
records = [make_record(i, rng) for i in range(int(sys.argv[2]))]
# The demo warehouse's generated password, from the environment (not argv).
password = os.environ["SKEIN_BENCH_WAREHOUSE_PASSWORD"]
target = dlt.destinations.postgres(f"postgresql://postgres:{password}@127.0.0.1:5433/warehouse")
pipeline = dlt.pipeline(
    pipeline_name="skein_bench_" + sys.argv[1], destination=target, dataset_name=sys.argv[1]
)
record_bytes = sum(len(json.dumps(r, separators=(",", ":"))) for r in records)
began, cpu = time.monotonic(), time.process_time()
pipeline.run(records, table_name="orders", write_disposition="merge", primary_key="id")
import resource
children = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({
    "seconds": time.monotonic() - began,
    "records": len(records),
    "bytes": record_bytes,
    "cpu_s": time.process_time() - cpu + children.ru_utime + children.ru_stime,
}))
"""


def dlt_run(schema: str, count: int) -> dict[str, float]:
    venv = ROOT / ".cache" / ("venv-" + re.sub(r"[^a-z0-9.]+", "-", DLT_VERSION.lower()))
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", DLT_VERSION], check=True)
    postgres = CpuWindow({"postgres": postgres_pids})
    postgres.start()
    out = subprocess.run(
        [str(python), "-c", DLT_SCRIPT, schema, str(count), str(Path(__file__).resolve().parent)],
        capture_output=True,
        text=True,
        check=True,
        timeout=1800,
        cwd="/tmp",
        env={
            **os.environ,
            "SKEIN_BENCH_WAREHOUSE_PASSWORD": demo_warehouse_secrets()["password"],
        },
    ).stdout
    postgres.stop()
    result: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    result["postgres_cpu_s"] = postgres.seconds()["postgres"]
    return result


def drop(schema: str) -> None:
    with closing(warehouse()) as conn, conn, conn.cursor() as cur:
        cur.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=180)
    parser.add_argument("--rate", type=float, default=40_000)
    parser.add_argument("--fresh-rate", type=float, default=10_000)
    parser.add_argument("--fresh-seconds", type=float, default=60)
    parser.add_argument("--closed-records", type=int, default=1_500_000)
    parser.add_argument("--closed-clients", type=int, default=16)
    parser.add_argument(
        "--closed-warmup", type=int, default=300_000, help="records sent first, not measured"
    )
    parser.add_argument("--dlt-records", type=int, default=ID_SPACE)
    parser.add_argument(
        "--only", choices=["closed", "sustained"], help="one pass (and dlt), not all three"
    )
    args = parser.parse_args()
    run = uuid.uuid4().hex[:6]
    schemas = [f"bench_e2e_{run}", f"bench_fresh_{run}", f"bench_dlt_{run}", f"bench_cl_{run}"]
    c: dict[str, float] = {}
    s: dict[str, float] = {}
    try:
        if args.only in (None, "closed"):
            print(
                f"closed loop: {args.closed_records:,} new records, {args.closed_clients} clients "
                f"(after {args.closed_warmup:,} to warm up, not measured)",
                flush=True,
            )
            c = closed(args.closed_records, args.closed_clients, schemas[3], args.closed_warmup)
            print(
                f"closed loop: {c['rate']:,.0f} records/s end to end (target >= 60,000); "
                f"sent at {c['send_rate']:,.0f} records/s, last row {c['drain_s']:.1f} s after "
                f"the last 202; pipeline {c['cpu_per_gb']:.1f} CPU-s per GB of records"
            )
        if args.only in (None, "sustained"):
            print(f"sustained: {args.rate:,.0f} records/s offered for {args.seconds:.0f} s")
            s = sustained(args.rate, args.seconds, schemas[0])
            print(
                f"accepted {s['accepted']:,.0f} records ({s['failed']:.0f} requests refused), "
                f"loaded {s['loaded']:,.0f} rows; drained {s['drained_s'] - s['offered_s']:.0f} s "
                f"after the load stopped; sustained {s['rate']:,.0f} records/s end to end"
            )
        if args.only is None:
            print(
                f"freshness: {args.fresh_rate:,.0f} records/s for {args.fresh_seconds:.0f} s",
                flush=True,
            )
            sustained(args.fresh_rate, args.fresh_seconds, schemas[1])
            p50, p99 = freshness(schemas[1])
            print(
                f"freshness (gate 202 -> row committed): p50 {p50:.1f} s, p99 {p99:.1f} s "
                "(target p99 <= 15 s)"
            )
        d = dlt_run(schemas[2], args.dlt_records)
        dlt_rate = d["records"] / d["seconds"]
        dlt_cpu_per_gb = (d["cpu_s"] + d["postgres_cpu_s"]) / (d["bytes"] / 1e9)
        print(f"dlt {DLT_VERSION}: {d['records']:,.0f} records merged", end=" ")
        print(
            f"in {d['seconds']:.1f} s = {dlt_rate:,.0f} records/s; {dlt_cpu_per_gb:.1f} CPU-s "
            f"per GB of records (dlt {d['cpu_s']:.1f} CPU-s, Postgres {d['postgres_cpu_s']:.1f})"
        )
        if s:
            print(f"ratio skein sustained / dlt: {s['rate'] / dlt_rate:.2f} (target >= 2)")
        if c:
            print(f"ratio skein closed loop / dlt: {c['rate'] / dlt_rate:.2f}")
            print(
                f"CPU per GB, skein / dlt: {c['cpu_per_gb'] / dlt_cpu_per_gb:.2f} (target <= 0.25)"
            )
    finally:
        for schema in schemas:
            drop(schema)
        trim_consumed(SharedSettings())


if __name__ == "__main__":
    main()
