"""Freshness that follows the load: 202-to-row time at a trickle and under load, and the batch
sizes that gave it, against the fixed timer in the same run.

    .venv/bin/python bench/freshness_bench.py [--seconds 60] [--clients 20]
                                              [--trickle-rate 100] [--busy-rate 30000]
                                              [--no-baseline]

1. **Trickle**: ``--clients`` clients (each its own schema on the demo warehouse, one table),
   ``--trickle-rate`` records/s in all, as one-record requests spread evenly over the clients
   (a webhook's pattern), open loop for ``--seconds``.
2. **Busy**: ``--busy-rate`` records/s in 1,000-record requests spread over the same clients'
   other table, open loop for ``--seconds``.
3. **Baseline** (unless ``--no-baseline``): the trickle again with the streamery's quiet-gap and
   fresh-age cuts off (``SKEIN_STREAMERY_BATCH_QUIET_S=0``, ``..._BATCH_FRESH_AGE_S=0``: every
   buffer waits for its age limit, the fixed 5 s timer Skein had before), then the streamery is
   restarted as it was.

A row's 202-to-row time is ``_sdc_batched_at - _sdc_received_at``: the gate stamps the second
when it accepts the record (its 202 follows once Kafka acknowledged, a few ms later), the loader
the first in the transaction that commits the row. Each run prints p50/p99/max over every row
it sent, the batches the streamery cut (records per batch: average and median), the loads that
wrote them (``_sdc_loads``: one transaction may take several of a table's batches) with records
per load, and the targets: trickle p50 <= 1 s and p99 <= 2 s, busy p99 <= 5 s; batch sizes are
reported so that a stream of tiny loads is visible as one.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import orjson
from psycopg2 import sql

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # support/ (not installed)
from bench_records import make_record
from gate_bench import RawHttp, requests_for
from kafka_tools import trim_consumed

from common import db
from common.settings import SharedSettings
from support.stack import ROOT
from support.tenants import Tenant, drop_schemas, new_tenants
from support.warehouse import DEMO_WAREHOUSE, warehouse

BUSY_PER_REQUEST = 1000
STACK = ROOT / "deploy" / "local" / "stack.sh"


def body(table: str, first_id: int, count: int, rng: random.Random) -> bytes:
    return orjson.dumps(
        {
            "table_name": table,
            "schema": {"properties": {"id": {"type": "integer"}}},
            "key_names": ["id"],
            "messages": [
                {
                    "action": "upsert",
                    "sequence": first_id + i,
                    "data": make_record(first_id + i, rng),
                }
                for i in range(count)
            ],
        }
    )


def plan(
    tenants: list[Tenant], table: str, rate: float, seconds: float, per_request: int
) -> list[bytes]:
    """The requests of one run, round-robin over the clients, ids unique per client."""
    total = max(len(tenants), int(rate * seconds / per_request))
    rng = random.Random(7)
    out = []
    for n in range(total):
        tenant = tenants[n % len(tenants)]
        first = (n // len(tenants)) * per_request + 1
        out.extend(requests_for(tenant.token, [body(table, first, per_request, rng)]))
    return out


async def open_loop(requests: list[bytes], per_second: float) -> tuple[int, int]:
    """Send ``requests`` at ``per_second`` requests/s whatever the answers' pace; (accepted,
    refused)."""
    idle: list[RawHttp] = []
    accepted = refused = 0

    async def one(request: bytes) -> None:
        nonlocal accepted, refused
        client = idle.pop() if idle else RawHttp()
        if await client.post(request) == 202:
            accepted += 1
        else:
            refused += 1
        idle.append(client)

    began = time.monotonic()
    tasks = []
    for i, request in enumerate(requests):
        await asyncio.sleep(max(0.0, began + i / per_second - time.monotonic()))
        tasks.append(asyncio.create_task(one(request)))
    await asyncio.gather(*tasks)
    for client in idle:
        await client.close()
    return accepted, refused


def rows_in(tenants: list[Tenant], table: str) -> int:
    with closing(warehouse()) as conn, conn.cursor() as cur:
        total = 0
        for t in tenants:
            cur.execute("SELECT to_regclass(%s)", (f"{t.schema}.{table}",))
            if cur.fetchone()[0] is None:  # type: ignore[index]
                continue
            cur.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(t.schema, table)))
            total += int(cur.fetchone()[0])  # type: ignore[index]
        return total


def latencies(tenants: list[Tenant], table: str) -> list[float]:
    with closing(warehouse()) as conn, conn.cursor() as cur:
        cur.execute(
            sql.SQL(" UNION ALL ").join(
                sql.SQL(
                    "SELECT extract(epoch FROM _sdc_batched_at - _sdc_received_at) FROM {}"
                ).format(sql.Identifier(t.schema, table))
                for t in tenants
            )
        )
        return sorted(float(r[0]) for r in cur.fetchall())


def loads(tenants: list[Tenant], table: str) -> int:
    """Load transactions that wrote to ``table`` (``_sdc_loads`` has a row per batch, each
    with its lease: one lease, one transaction)."""
    with closing(warehouse()) as conn, conn.cursor() as cur:
        cur.execute(
            sql.SQL(" UNION ALL ").join(
                sql.SQL("SELECT count(DISTINCT lease_token) FROM {} WHERE table_name = %s").format(
                    sql.Identifier(t.schema, "_sdc_loads")
                )
                for t in tenants
            ),
            [table] * len(tenants),
        )
        return sum(int(r[0]) for r in cur.fetchall())


def batch_sizes(tenants: list[Tenant], table: str) -> list[int]:
    with closing(db.connect()) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT record_count FROM batches WHERE client_id = ANY(%s) AND table_name = %s"
            " AND state = 'loaded' ORDER BY record_count",
            ([t.client_id for t in tenants], table),
        )
        return [int(r[0]) for r in cur.fetchall()]


def pick(values: list[float], p: float) -> float:
    return values[min(len(values) - 1, int(p / 100 * len(values)))] if values else float("nan")


def run(
    name: str, tenants: list[Tenant], table: str, rate: float, seconds: float, per_request: int
) -> dict[str, float]:
    requests = plan(tenants, table, rate, seconds, per_request)
    sent = len(requests) * per_request
    accepted, refused = asyncio.run(open_loop(requests, rate / per_request))
    if refused:
        print(f"  {name}: the gate refused {refused} requests", file=sys.stderr)
    deadline = time.monotonic() + 300
    while rows_in(tenants, table) < accepted * per_request:
        if time.monotonic() > deadline:
            raise SystemExit(f"{name}: rows still missing after 5 minutes")
        time.sleep(0.5)
    waits = latencies(tenants, table)
    sizes = batch_sizes(tenants, table)
    return {
        "records": sent,
        "p50": pick(waits, 50),
        "p99": pick(waits, 99),
        "max": waits[-1],
        "batches": len(sizes),
        "avg_batch": sum(sizes) / len(sizes),
        "loads": loads(tenants, table),
        "median_batch": float(sizes[len(sizes) // 2]),
    }


def line(name: str, r: dict[str, float], target: str) -> str:
    return (
        f"{name:<34} {r['records']:>9,.0f} {r['p50']:>7.2f} {r['p99']:>7.2f} {r['max']:>7.2f}"
        f" {r['batches']:>7,.0f} {r['avg_batch']:>9,.1f} {r['median_batch']:>9,.0f}"
        f" {r['loads']:>7,.0f} {r['records'] / max(1, r['loads']):>9,.1f}   {target}"
    )


def streamery(env: dict[str, str]) -> None:
    """Restart the local stack's streamery with ``env`` added to its environment."""
    subprocess.run([str(STACK), "stop", "streamery"], check=True, capture_output=True)
    subprocess.run(
        [str(STACK), "start", "streamery"],
        check=True,
        capture_output=True,
        env={**os.environ, **env},
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--trickle-rate", type=float, default=100)
    parser.add_argument("--busy-rate", type=float, default=30_000)
    parser.add_argument("--no-baseline", action="store_true")
    args = parser.parse_args()
    tenants = new_tenants(args.clients, DEMO_WAREHOUSE, prefix="fresh")
    results: list[tuple[str, dict[str, float], str]] = []
    try:
        trickle = run("trickle", tenants, "trickle", args.trickle_rate, args.seconds, 1)
        results.append(
            (f"trickle {args.trickle_rate:,.0f} rec/s, 1-record requests", trickle,
             "target p50 <= 1 s, p99 <= 2 s")
        )  # fmt: skip
        busy = run("busy", tenants, "busy", args.busy_rate, args.seconds, BUSY_PER_REQUEST)
        results.append(
            (f"busy {args.busy_rate:,.0f} rec/s, 1,000-record requests", busy, "target p99 <= 5 s")
        )
        if not args.no_baseline:
            streamery(
                {"SKEIN_STREAMERY_BATCH_QUIET_S": "0", "SKEIN_STREAMERY_BATCH_FRESH_AGE_S": "0"}
            )
            try:
                base = run("baseline", tenants, "fixed", args.trickle_rate, args.seconds, 1)
            finally:
                streamery({})
            results.append(("baseline: trickle, fixed 5 s timer", base, ""))
    finally:
        drop_schemas(tenants)
    print(
        f"\n{args.clients} clients, {args.seconds:.0f} s a run; 202-to-row seconds over every row"
        f"\n{'run':<34} {'records':>9} {'p50 s':>7} {'p99 s':>7} {'max s':>7} {'batches':>7}"
        f" {'avg batch':>9} {'med batch':>9} {'loads':>7} {'per load':>9}"
    )
    for name, r, target in results:
        print(line(name, r, target))
    if not args.no_baseline:
        print(
            f"trickle p99 / fixed-timer p99: {trickle['p99'] / base['p99']:.2f}"
            f" (records per batch: {trickle['avg_batch']:.1f} vs {base['avg_batch']:.1f})"
        )
    trim_consumed(SharedSettings())


if __name__ == "__main__":
    main()
