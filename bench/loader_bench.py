"""Postgres loader alone: rows/s from prepared batch objects in S3 into the demo warehouse,
against a raw ``COPY`` of the same rows into an equivalent keyed table, in the same run.

    .venv/bin/python bench/loader_bench.py [--rows 200000] [--batch-rows 20000] [--repeat 3]

The loader path is the real one: S3 get -> gunzip -> parse -> place -> spill -> COPY into
staging -> merge into a keyed table -> _sdc_loads, one transaction per lease of batches (by
default all ten batch objects in one lease, as the runner would lease them). The ratio is for
new keys (inserts); the same batches are then loaded again, every row an update of an existing
key, and that rate is printed too. Each figure is the median of ``--repeat`` runs. Last, the
fixed cost of one load: a 100-record batch into an existing table, in ms (wall and the loader
process's CPU), split into the bookkeeping check, the S3 read and the load's transaction.
Where the native plans are built (``services/loaders/native/``) the loads read batches as the
runner then does (record lines unread); the same rows are also loaded with the Python plans
alone, and both rates and the loader's CPU-us per row are printed with their ratio.
"""

from __future__ import annotations

import argparse
import gzip
import io
import itertools
import random
import statistics
import sys
import time
import uuid
from pathlib import Path

import orjson
import psycopg2
from psycopg2 import sql

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # support/ (not installed)
from bench_records import make_record

from common import runtime
from common.s3 import Objects
from common.s3 import client as s3_client
from common.settings import SharedSettings
from common.wire import Header
from services.loaders.core import native
from services.loaders.core.reader import batch_events, s3_chunks
from services.loaders.postgres import warehouse
from support.stack import use_stack_passwords

use_stack_passwords()  # the demo warehouse's generated password

DSN = "postgresql://postgres@127.0.0.1:5433/warehouse"


def _address(value: object) -> dict[str, object]:
    assert isinstance(value, dict)
    return {f"address__{k}": v for k, v in value.items()}


def _all(rates: list[float]) -> str:
    return "(" + ", ".join(f"{r:,.0f}" for r in rates) + ")"


def fixed_cost(
    conn: psycopg2.extensions.connection,
    s3: object,
    objects: Objects,
    bucket: str,
    schema: str,
    header: Header,
    rng: random.Random,
    repeat: int,
) -> None:
    """One load's fixed cost: a 100-record batch of new keys into an existing table, as the
    runner does it (bookkeeping check, S3 get and parse, load in one transaction); the median
    of ``repeat`` loads, in wall and CPU milliseconds, split by step."""
    table = "fixed_cost"
    steps: dict[str, list[tuple[float, float]]] = {"check": [], "s3": [], "load": []}
    keys = []
    try:
        for n in range(repeat + 1):
            lines = [header.encode()] + [
                orjson.dumps(
                    {"action": "upsert", "sequence": 1, "data": make_record(n * 100 + i, rng)}
                )
                for i in range(100)
            ]
            key = f"bench/fixed/{uuid.uuid4().hex}.jsonl.gz"
            s3.put_object(Bucket=bucket, Key=key, Body=gzip.compress(b"\n".join(lines), 1))  # type: ignore[attr-defined]
            keys.append(key)
        for n, key in enumerate(keys):
            timing = []
            t, c = time.perf_counter(), time.process_time()
            warehouse.already_loaded(conn, schema, [10_000_000 + n])
            timing.append((time.perf_counter() - t, time.process_time() - c))
            t, c = time.perf_counter(), time.process_time()
            stream = list(batch_events(s3_chunks(objects, key), text=NATIVE))
            timing.append((time.perf_counter() - t, time.process_time() - c))
            t, c = time.perf_counter(), time.process_time()
            warehouse.load(
                conn, schema, warehouse.LeaseLoad(table, [10_000_000 + n], "fixed", iter(stream))
            )
            timing.append((time.perf_counter() - t, time.process_time() - c))
            if n:  # the first load creates the table: not a fixed cost
                for name, step in zip(steps, timing, strict=True):
                    steps[name].append(step)
    finally:
        for key in keys:
            s3.delete_object(Bucket=bucket, Key=key)  # type: ignore[attr-defined]
    wall = {name: statistics.median(w for w, _ in v) * 1000 for name, v in steps.items()}
    cpu = {name: statistics.median(c for _, c in v) * 1000 for name, v in steps.items()}
    parts = ", ".join(f"{name} {wall[name]:.1f} ms ({cpu[name]:.1f} CPU)" for name in steps)
    print(
        f"fixed cost of one load (100 records, existing table, median of {repeat}): "
        f"{sum(wall.values()):.1f} ms wall, {sum(cpu.values()):.1f} ms CPU in the loader: {parts}"
    )


NATIVE = native.available()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--batch-rows", type=int, default=20_000)
    # The runner leases up to SKEIN_LOADER_<TYPE>_MAX_BATCHES (20) batches or MAX_BYTES (32 MiB
    # of objects) at a time; ten of these ~1.6 MiB objects fit in one lease.
    parser.add_argument("--lease-batches", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    runtime.quick_gil_handoff()  # as the loader process does
    runtime.tune_gc()
    shared = SharedSettings()
    s3 = s3_client(shared)
    objects = Objects(shared, timeout_s=60.0)  # as the loader reads batch objects
    rng = random.Random(1)
    run = uuid.uuid4().hex[:8]
    schema = f"bench_{run}"
    header = Header(1, "orders", ("id",), None, None, "2026-11-26T10:00:00.000000Z", "b", "push")
    keys = []
    records = [make_record(i, rng) for i in range(args.rows)]
    for start in range(0, args.rows, args.batch_rows):
        lines = [header.encode()] + [
            orjson.dumps({"action": "upsert", "sequence": i + 1, "data": records[i]})
            for i in range(start, min(args.rows, start + args.batch_rows))
        ]
        key = f"bench/{run}/{start:012d}.jsonl.gz"
        s3.put_object(Bucket=shared.s3_bucket, Key=key, Body=gzip.compress(b"\n".join(lines), 1))
        keys.append(key)
    row_bytes = sum(len(orjson.dumps(r)) for r in records[:1000]) / 1000
    print(
        f"{args.rows:,} rows of ~{row_bytes:.0f} bytes in {len(keys)} batch objects, "
        f"{args.lease_batches} to a lease"
    )

    conn = psycopg2.connect(DSN)
    try:
        warehouse.ensure_metadata(conn, schema)

        def load_all(table: str, first_id: int, text: bool = NATIVE) -> tuple[float, float]:
            """Every batch, ``--lease-batches`` to a lease (one transaction), as the runner
            loads them (``text``: record lines unread, for the native plans, as the runner
            hands them over where those are built); rows/s, and this process's CPU-us per row."""
            began, cpu = time.monotonic(), time.process_time()
            for start in range(0, len(keys), args.lease_batches):
                group = keys[start : start + args.lease_batches]
                stream = itertools.chain.from_iterable(
                    batch_events(s3_chunks(objects, key), text=text) for key in group
                )
                ids = [first_id + start + n for n in range(len(group))]
                warehouse.load(conn, schema, warehouse.LeaseLoad(table, ids, "bench", stream))
            cpu_per_row = (time.process_time() - cpu) / args.rows * 1e6
            return args.rows / (time.monotonic() - began), cpu_per_row

        # Baseline: the same rows (the loader's de-nested ones, with the _sdc columns it
        # writes), already rendered as CSV, COPY'd into a table just like the loader's.
        batched_at = "2026-11-26T10:00:01.000000Z"
        buffer = io.StringIO()
        for i, r in enumerate(records):
            row = {**{k: v for k, v in r.items() if k != "address"}, **_address(r["address"])}
            row |= {"_sdc_received_at": header.received_at, "_sdc_sequence": i + 1}
            row["_sdc_batched_at"] = batched_at
            buffer.write(",".join('"' + str(v).replace('"', '""') + '"' for v in row.values()))
            buffer.write("\n")
        data = buffer.getvalue().encode()
        columns = list(row)

        inserts, updates, raws, pythons = [], [], [], []
        loader_cpu: dict[bool, list[float]] = {True: [], False: []}  # new keys, by ``text``
        for n in range(args.repeat):
            table = f"orders_{n}"
            rate, cpu = load_all(table, 3 * n * len(keys))
            inserts.append(rate)
            loader_cpu[NATIVE].append(cpu)
            # The same batches again: every key exists, so every row is an update this time.
            updates.append(load_all(table, (3 * n + 1) * len(keys))[0])
            if NATIVE:  # the Python plans alone, into another fresh table
                rate, cpu = load_all(f"py_{n}", (3 * n + 2) * len(keys), False)
                pythons.append(rate)
                loader_cpu[False].append(cpu)
            raw = sql.Identifier(schema, f"raw_copy_{n}")
            with conn, conn.cursor() as cur:
                cur.execute(
                    sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING ALL)").format(
                        raw, sql.Identifier(schema, table)
                    )
                )
            began = time.monotonic()
            with conn, conn.cursor() as cur:
                cur.copy_expert(
                    sql.SQL("COPY {} ({}) FROM STDIN WITH (FORMAT csv)")
                    .format(raw, sql.SQL(", ").join(map(sql.Identifier, columns)))
                    .as_string(cur),
                    io.BytesIO(data),
                )
            raws.append(args.rows / (time.monotonic() - began))
            with conn, conn.cursor() as cur:
                cur.execute(
                    sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, table))
                )
                assert cur.fetchone() == (args.rows,)
        loader_rate, update_rate, raw_rate = map(statistics.median, (inserts, updates, raws))
        print(f"(medians of {args.repeat} runs; each run loads into fresh tables)")
        print(f"loader (S3 -> merge, keyed):  {loader_rate:>9,.0f} rows/s  {_all(inserts)}")
        print(f"loader, all rows updates:     {update_rate:>9,.0f} rows/s  {_all(updates)}")
        print(f"raw COPY of the same rows:    {raw_rate:>9,.0f} rows/s  {_all(raws)}")
        print(f"ratio loader/raw COPY: {loader_rate / raw_rate:.2f} (target >= 0.5)")
        if NATIVE:
            python_rate = statistics.median(pythons)
            native_cpu, python_cpu = (statistics.median(loader_cpu[r]) for r in (True, False))
            print(f"loader, Python plans only:    {python_rate:>9,.0f} rows/s  {_all(pythons)}")
            print(
                f"loader CPU per row (this process), new keys: native plans {native_cpu:.2f} us, "
                f"Python plans {python_cpu:.2f} us; ratio {native_cpu / python_cpu:.2f}"
            )
        else:
            print("(skein_loader_native is not built here: the loader ran its Python plans)")
        fixed_cost(conn, s3, objects, shared.s3_bucket, schema, header, rng, repeat=50)
    finally:
        with conn, conn.cursor() as cur:
            cur.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
        conn.close()
        for key in keys:
            s3.delete_object(Bucket=shared.s3_bucket, Key=key)


if __name__ == "__main__":
    main()
