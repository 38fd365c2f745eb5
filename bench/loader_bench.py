"""Postgres loader alone: rows/s from prepared batch objects in S3 into the demo warehouse,
against a raw ``COPY`` of the same rows into an equivalent keyed table, in the same run.

    .venv/bin/python bench/loader_bench.py [--rows 200000] [--batch-rows 20000]

The loader path is the real one: S3 get -> gunzip -> parse -> place -> spill -> COPY into
staging -> merge into a keyed table -> _sdc_loads, one transaction per lease of batches (here
one batch object per lease). The ratio is for new keys (inserts); the same batches are then
loaded again, every row an update of an existing key, and that rate is printed too.
"""

from __future__ import annotations

import argparse
import gzip
import io
import random
import time
import uuid

import boto3
import orjson
import psycopg2
from bench_records import make_record
from psycopg2 import sql

from common.settings import SharedSettings
from common.wire import Header
from services.loaders.core.process import quick_gil_handoff
from services.loaders.core.reader import events, lines_of, s3_chunks
from services.loaders.postgres import warehouse

DSN = "postgresql://postgres@127.0.0.1:5433/warehouse"


def _address(value: object) -> dict[str, object]:
    assert isinstance(value, dict)
    return {f"address__{k}": v for k, v in value.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--batch-rows", type=int, default=20_000)
    args = parser.parse_args()
    quick_gil_handoff()  # as the loader process does
    shared = SharedSettings()
    s3 = boto3.client(
        "s3",
        endpoint_url=shared.s3_endpoint,
        aws_access_key_id=shared.s3_access_key,
        aws_secret_access_key=shared.s3_secret_key.get_secret_value(),
        region_name="us-east-1",
    )
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
    print(f"{args.rows:,} rows of ~{row_bytes:.0f} bytes in {len(keys)} batch objects")

    conn = psycopg2.connect(DSN)
    try:
        warehouse.ensure_metadata(conn, schema)
        began = time.monotonic()
        for n, key in enumerate(keys):
            stream = events(lines_of(s3_chunks(s3, shared.s3_bucket, key)))
            warehouse.load(conn, schema, warehouse.LeaseLoad("orders", [n], "bench", stream))
        loader_s = time.monotonic() - began
        loader_rate = args.rows / loader_s
        # The same batches again: every key exists, so every row is an update this time.
        began = time.monotonic()
        for n, key in enumerate(keys):
            stream = events(lines_of(s3_chunks(s3, shared.s3_bucket, key)))
            lease = warehouse.LeaseLoad("orders", [len(keys) + n], "bench", stream)
            warehouse.load(conn, schema, lease)
        update_rate = args.rows / (time.monotonic() - began)

        # Baseline: COPY the same rows (already rendered CSV) into an equivalent keyed table.
        # Its rows are the loader's de-nested ones (address -> address__city, address__zip).
        flat = [
            {**{k: v for k, v in r.items() if k != "address"}, **_address(r["address"])}
            for r in records
        ]
        columns = list(flat[0])
        buffer = io.StringIO()
        for r in flat:
            buffer.write(",".join('"' + str(r[c]).replace('"', '""') + '"' for c in columns) + "\n")
        data = buffer.getvalue().encode()
        with conn, conn.cursor() as cur:
            cur.execute(
                sql.SQL(
                    "CREATE TABLE {} (id bigint PRIMARY KEY, customer text, email text, "
                    "amount double precision, currency text, status text, "
                    "created_at timestamptz, note text, address__city text, address__zip text)"
                ).format(sql.Identifier(schema, "raw_copy"))
            )
        began = time.monotonic()
        with conn, conn.cursor() as cur:
            cur.copy_expert(
                sql.SQL("COPY {} ({}) FROM STDIN WITH (FORMAT csv)")
                .format(
                    sql.Identifier(schema, "raw_copy"),
                    sql.SQL(", ").join(map(sql.Identifier, columns)),
                )
                .as_string(cur),
                io.BytesIO(data),
            )
        raw_rate = args.rows / (time.monotonic() - began)
        with conn, conn.cursor() as cur:
            cur.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, "orders")))
            loaded = cur.fetchone()
        assert loaded == (args.rows,), loaded
        print(f"loader (S3 -> merge, keyed):  {loader_rate:>9,.0f} rows/s ({loader_s:.1f} s)")
        print(f"loader, all rows updates:     {update_rate:>9,.0f} rows/s (same batches again)")
        print(f"raw COPY of the same rows:    {raw_rate:>9,.0f} rows/s")
        print(f"ratio loader/raw COPY: {loader_rate / raw_rate:.2f} (target >= 0.5)")
    finally:
        with conn, conn.cursor() as cur:
            cur.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
        conn.close()
        for key in keys:
            s3.delete_object(Bucket=shared.s3_bucket, Key=key)


if __name__ == "__main__":
    main()
