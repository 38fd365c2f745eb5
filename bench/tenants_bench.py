"""Many tenants against one table: the same records loaded two ways in one run.

    .venv/bin/python bench/tenants_bench.py [--clients 100] [--tables 3] [--records 300000]
                                            [--repeat 3]

1. Many: ``--clients`` clients, each with its own schema on the demo warehouse and ``--tables``
   tables; the records are spread evenly over every (client, table) and sent through the gate
   (1,000-record requests, 8 concurrent senders).
2. One: a single client, one table, the same number of records, the same way.

Each is measured cold once, then warm ``--repeat`` times, many and one alternately (so a drift
in the machine, a JVM warming, an autovacuum, hits both):

- **cold**: the records are the first any of these tables ever got, so every client's schema
  and every table is created on the way (what a new tenant sees once);
- **warm**: as many new records (new keys: inserts, as the cold pass) into the same tables,
  which now exist (what tenants see every day after). The warm ratio is that of the median
  rates (one pass of ~6 s varies by ±15 % on this machine); each pair's ratio is printed too.

For each: records/s end to end (first request sent to the last row committed, rows counted by
the spool's acks polled every 100 ms on the control database, then ``_sdc_loads`` in the
warehouse), and the peak number of the loader's warehouse sessions
seen in ``pg_stat_activity`` (sampled every 50 ms); on stderr, where the machine's CPU went
during each pass, by service (``cpu_account.py``). Prints the rates, the many/one ratios
(target >= 0.6 at 300 tables) and the connection peak. Bench schemas are dropped
afterwards.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
from psycopg2 import sql

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # support/ (not installed)
from bench_records import make_record
from cpu_account import CpuWindow, stack_groups
from kafka_tools import trim_consumed

from common import db
from common.settings import SharedSettings
from support.stack import GATE
from support.tenants import drop_schemas, new_tenants
from support.warehouse import DEMO_WAREHOUSE, warehouse

PER_REQUEST = 1000
LOADER_APP = "skein-loader-postgres"


def bodies(targets: list[tuple[str, str]], total: int, first: int = 0) -> list[tuple[str, bytes]]:
    """(token, body) requests spreading ``total`` records evenly over ``targets``
    ((token, table) pairs), 1,000 records (or fewer) a request; ids from ``first`` on."""
    rng = random.Random(5)
    per_target = max(1, total // len(targets))
    out = []
    for token, table in targets:
        for start in range(0, per_target, PER_REQUEST):
            n = min(PER_REQUEST, per_target - start)
            messages = [
                {
                    "action": "upsert",
                    "sequence": start + i + 1,
                    "data": make_record(first + start + i, rng),
                }
                for i in range(n)
            ]
            body = {
                "table_name": table,
                "schema": {"properties": {"id": {"type": "integer"}}},
                "key_names": ["id"],
                "messages": messages,
            }
            out.append((token, orjson.dumps(body)))
    rng.shuffle(out)
    return out


def send(requests: list[tuple[str, bytes]]) -> None:
    def post(item: tuple[str, bytes]) -> None:
        token, body = item
        while True:
            r = http.post(
                f"{GATE}/v2/import/batch",
                content=body,
                headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
                timeout=60,
            )
            if r.status_code == 202:
                return
            if r.status_code not in (429, 503):
                raise SystemExit(f"gate answered {r.status_code}: {r.text}")
            time.sleep(0.5)

    with httpx.Client() as http, ThreadPoolExecutor(8) as pool:
        list(pool.map(post, requests))


class Progress:
    """Rows loaded per schema (``_sdc_loads``), read on one connection. A schema holding all
    the rows it waits for is not read again: the probe costs the warehouse little, or the
    many-schema pass would pay for its own measurement (reading 100 schemas through
    ``information_schema`` on a new connection every 100 ms cost ~28 ms a poll)."""

    def __init__(self, want: dict[str, int]) -> None:
        self.pending = dict(want)
        self._conn = warehouse()

    def missing(self) -> int:
        """Rows still to come; 0 once every schema has what it waits for."""
        with self._conn.cursor() as cur:
            cur.execute(
                "SELECT s FROM unnest(%s::text[]) AS s"
                " WHERE to_regclass(quote_ident(s) || '._sdc_loads') IS NOT NULL",
                (list(self.pending),),
            )
            present = [r[0] for r in cur.fetchall()]
            if present:
                cur.execute(
                    sql.SQL(" UNION ALL ").join(
                        sql.SQL("SELECT {}, coalesce(sum(records), 0) FROM {}").format(
                            sql.Literal(schema), sql.Identifier(schema, "_sdc_loads")
                        )
                        for schema in present
                    )
                )
                for schema, rows in cur.fetchall():
                    if rows >= self.pending[schema]:
                        del self.pending[schema]
        return sum(self.pending.values())

    def close(self) -> None:
        self._conn.close()


class Acked:
    """Records the spool has marked loaded, per client (a batch is acked right after its
    warehouse transaction commits): one indexed query on the control database a poll, so
    waiting for 100 schemas costs the warehouse under test nothing. The rows are then checked in
    the warehouse itself, once (``Progress``)."""

    def __init__(self, want: dict[int, int]) -> None:
        self.want = want
        self._conn = db.connect()
        self._conn.autocommit = True

    def missing(self) -> int:
        with self._conn.cursor() as cur:
            cur.execute(
                "SELECT client_id, sum(record_count) FROM batches"
                " WHERE client_id = ANY(%s) AND state = 'loaded' GROUP BY client_id",
                (list(self.want),),
            )
            got = {int(c): int(n) for c, n in cur.fetchall()}
        return sum(max(0, n - got.get(c, 0)) for c, n in self.want.items())

    def close(self) -> None:
        self._conn.close()


class Sampler:
    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with closing(warehouse()) as conn, conn.cursor() as cur:
            while not self._stop.wait(0.05):
                cur.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
                    (LOADER_APP,),
                )
                self.peak = max(self.peak, int(cur.fetchone()[0]))  # type: ignore[index]

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(5)
        return self.peak


@dataclass
class Layout:
    """One way of spreading the records: its tenants, their (token, table) targets and what
    each schema holds so far."""

    name: str
    made: list[Any]
    targets: list[tuple[str, str]]
    want: dict[str, int]
    client_of: dict[str, int]

    @classmethod
    def make(cls, name: str, clients: int, tables: int) -> Layout:
        made = new_tenants(clients, DEMO_WAREHOUSE, prefix=f"bt_{name}")
        targets = [(t.token, f"t{n}") for t in made for n in range(tables)]
        return cls(
            name,
            made,
            targets,
            {t.schema: 0 for t in made},
            {t.schema: t.client_id for t in made},
        )

    def send(self, total: int, first: int) -> dict[str, float]:
        """``total`` new records (ids from ``first``), timed until every row is loaded."""
        requests = bodies(self.targets, total, first)
        schema_of = {t.token: t.schema for t in self.made}
        for token, body in requests:
            self.want[schema_of[token]] += body.count(b'"action"')
        return {
            "records": total,
            "tables": len(self.targets),
            **timed(self.name, requests, dict(self.want), self.client_of),
        }


def timed(
    name: str, requests: list[tuple[str, bytes]], want: dict[str, int], client_of: dict[str, int]
) -> dict[str, float]:
    """Send ``requests``; wait until each schema holds the rows ``want`` names in all (as the
    spool's acks tell, then checked in the warehouse)."""
    expected = sum(body.count(b'"action"') for _, body in requests)
    sampler = Sampler()
    cpu = CpuWindow(stack_groups())
    cpu.start()
    started = time.monotonic()
    send(requests)
    sent = time.monotonic()
    acked = Acked({client_of[schema]: n for schema, n in want.items()})
    progress = Progress(want)
    try:
        while (missing := acked.missing()) > 0 or progress.missing() > 0:
            if time.monotonic() - sent > 900:
                raise SystemExit(f"{name}: {missing} rows still missing after 15 minutes")
            time.sleep(0.1)
    finally:
        acked.close()
        progress.close()
    elapsed = time.monotonic() - started
    cpu.stop()
    gb = sum(len(body) for _, body in requests) / 1e9
    print(f"{name}, {len(requests)} requests:\n{cpu.report(gb)}", file=sys.stderr, flush=True)
    return {
        "seconds": round(elapsed, 2),
        "rate": round(expected / elapsed),
        "send_rate": round(expected / (sent - started)),
        "peak_connections": sampler.stop(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--tables", type=int, default=3)
    parser.add_argument("--records", type=int, default=300_000)
    parser.add_argument("--repeat", type=int, default=3, help="warm passes of each layout")
    args = parser.parse_args()
    many = Layout.make("many", args.clients, args.tables)
    one = Layout.make("one", 1, 1)
    try:
        cold = {layout.name: layout.send(args.records, 0) for layout in (many, one)}
        print(orjson.dumps({"cold": cold}).decode(), flush=True)
        warm: dict[str, list[dict[str, float]]] = {"many": [], "one": []}
        for n in range(args.repeat):  # alternately, so drift in the machine hits both
            for layout in (many, one):
                warm[layout.name].append(layout.send(args.records, (n + 1) * args.records))
            print(orjson.dumps({"warm": {k: v[-1] for k, v in warm.items()}}).decode(), flush=True)
    finally:
        drop_schemas(many.made + one.made)
    rates = {name: [p["rate"] for p in passes] for name, passes in warm.items()}
    median = {name: statistics.median(r) for name, r in rates.items()}
    peak = max(p["peak_connections"] for passes in warm.values() for p in passes)
    print(
        orjson.dumps(
            {
                "warm_rates": rates,
                "ratio_many_to_one_warm": round(median["many"] / median["one"], 2),
                "ratio_many_to_one_warm_each": [
                    round(m / o, 2) for m, o in zip(rates["many"], rates["one"], strict=True)
                ],
                "ratio_many_to_one_cold": round(cold["many"]["rate"] / cold["one"]["rate"], 2),
                "target": 0.6,
                "peak_loader_connections": max(
                    peak, *(c["peak_connections"] for c in cold.values())
                ),
            }
        ).decode()
    )
    trim_consumed(SharedSettings())


if __name__ == "__main__":
    main()
