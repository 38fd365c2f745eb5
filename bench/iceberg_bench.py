"""Iceberg loader alone: records/s from prepared batch objects into an Iceberg table, against dlt
loading the same records with its filesystem destination in Iceberg format, in the same run.

    .venv/bin/python bench/iceberg_bench.py [--rows 50000] [--batch-rows 5000] [--repeat 1]

Both write to the same place in the same way: a SQL catalog (pyiceberg's) in the ``lakehouse``
database of the demo-warehouse cluster, data files in the stack's S3 bucket ``lake`` (the one
``SKEIN_DESTINATION_PLATFORM_S3_BUCKETS`` lets destinations use), pyiceberg 0.12 with pyarrow's
file IO, a table keyed on ``id``.

1. Skein: the real loader path (``IcebergWarehouse.load``, as the runner calls it): S3 get ->
   gunzip -> parse -> plan -> typed rows -> one catalog commit per lease (``--lease-batches``
   batch objects of ``--batch-rows`` records), keyed merge (greatest sequence wins), the batch
   ids in the snapshot summary. First into a new table (every key new), then the same batches
   again (every row an update of a stored key).
2. dlt (PyPI ``dlt[filesystem,pyiceberg]``, in its own cached virtualenv, as bench/e2e_bench.py
   runs dlt): ``pipeline.run`` of the same records (generated in its process, so dlt reads
   nothing from S3: an advantage to it) with ``write_disposition`` merge/upsert on ``id`` and
   ``table_format="iceberg"``: extract, normalize to Parquet, load into the table; then the
   same records again (all updates).

Prints each rate (the median of ``--repeat`` runs, each into tables of its own) and the ratio
Skein / dlt (target >= 2), for new keys and for updates. dlt's upsert into Iceberg costs more
than linearly in the rows of a run (on two cores: 20,000 records 9 s, 200,000 about 270 s for
new keys, and its update pass of 200,000 had not finished after 20 minutes), hence the default
of 50,000 records.
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import json
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # support/ (not installed)
from bench_records import make_record

from common import runtime
from common.s3 import Objects
from common.s3 import client as s3_client
from common.settings import SharedSettings
from common.spool_client import Lease
from common.wire import Header
from services.loaders.core.protocol import Destination
from services.loaders.core.reader import events, lines_of, s3_chunks
from services.loaders.iceberg import connection
from services.loaders.iceberg.destination import target_of
from services.loaders.iceberg.loader import IcebergWarehouse
from support import lakehouse
from support.stack import ROOT, demo_warehouse_secrets
from support.warehouse import DEMO_WAREHOUSE

DLT_VERSION = "dlt[filesystem,pyiceberg]==1.31.0"
DLT_PACKAGES = [DLT_VERSION, "psycopg2-binary"]  # the SQL catalog on Postgres
BENCH = Path(__file__).resolve().parent
LAKE_BUCKET = "lake"
DLT_CATALOG = "dlt_bench"  # dlt's catalog name in the same database (Skein's: skein)

# Runs in dlt's own virtualenv: argv = rows, a JSON of settings; prints seconds per run as JSON.
DLT_SCRIPT = r"""
import json, os, shutil, sys, time, random, tempfile
args = json.loads(sys.argv[1])
sys.path.insert(0, args["bench_dir"])
from bench_records import make_record
rng = random.Random(1)
records = [make_record(i, rng) for i in range(args["rows"])]
os.environ["ICEBERG_CATALOG__ICEBERG_CATALOG_NAME"] = args["catalog_name"]
os.environ["ICEBERG_CATALOG__ICEBERG_CATALOG_TYPE"] = "sql"
os.environ["ICEBERG_CATALOG__ICEBERG_CATALOG_CONFIG"] = json.dumps(args["catalog"])
import dlt
target = dlt.destinations.filesystem(
    bucket_url=args["bucket_url"],
    credentials={
        "aws_access_key_id": args["key_id"],
        "aws_secret_access_key": args["secret"],
        "endpoint_url": args["endpoint"],
        "region_name": "us-east-1",
    },
)
work_dir = tempfile.mkdtemp(prefix="dlt-bench-")
pipeline = dlt.pipeline(
    pipeline_name="skein_iceberg_bench_" + args["dataset"],
    destination=target,
    dataset_name=args["dataset"],
    pipelines_dir=work_dir,
)
seconds = []
for _ in range(2):  # new keys, then every row an update
    began = time.monotonic()
    pipeline.run(
        records,
        table_name="orders",
        write_disposition={"disposition": "merge", "strategy": "upsert"},
        primary_key="id",
        table_format="iceberg",
    )
    seconds.append(time.monotonic() - began)
shutil.rmtree(work_dir, ignore_errors=True)
print(json.dumps(seconds))
"""


def destination(namespace: str, prefix: str, catalog_name: str = "skein") -> Destination:
    shared = SharedSettings()
    config = {
        "catalog_name": catalog_name,
        "dsn_params": {**DEMO_WAREHOUSE, "dbname": lakehouse.LAKEHOUSE_DB},
        "warehouse": f"s3://{LAKE_BUCKET}/{prefix}",
        "namespace": namespace,
        "s3_endpoint": shared.s3_endpoint,
        "aws_access_key_id": shared.s3_access_key,
    }
    secrets = {
        **demo_warehouse_secrets(),
        "aws_secret_access_key": shared.s3_secret_key.get_secret_value(),
    }
    return Destination(1, "iceberg", config, secrets)


def dlt_python() -> str:
    venv = ROOT / ".cache" / ("venv-" + re.sub(r"[^a-z0-9.]+", "-", DLT_VERSION.lower()))
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", *DLT_PACKAGES], check=True)
    return str(python)


def dlt_run(rows: int, dataset: str, prefix: str) -> list[float]:
    """dlt's two runs (new keys, updates) into its own namespace ``dataset``: seconds each."""
    shared = SharedSettings()
    password = demo_warehouse_secrets()["password"]
    dsn = DEMO_WAREHOUSE
    uri = (
        f"postgresql+psycopg2://{dsn['user']}:{password}@{dsn['host']}:{dsn['port']}/"
        f"{lakehouse.LAKEHOUSE_DB}"
    )
    key_id, secret = shared.s3_access_key, shared.s3_secret_key.get_secret_value()
    args = {
        "rows": rows,
        "bench_dir": str(BENCH),
        "dataset": dataset,
        "catalog_name": DLT_CATALOG,
        "bucket_url": f"s3://{LAKE_BUCKET}/{prefix}",
        "key_id": key_id,
        "secret": secret,
        "endpoint": shared.s3_endpoint,
        # The same kind of catalog as Skein's, in the same database (its own catalog name).
        "catalog": {
            "type": "sql",
            "uri": uri,
            "warehouse": f"s3://{LAKE_BUCKET}/{prefix}",
            "py-io-impl": connection.PY_IO_IMPL,
            "s3.endpoint": shared.s3_endpoint,
            "s3.access-key-id": key_id,
            "s3.secret-access-key": secret,
            "s3.region": "us-east-1",
        },
    }
    done = subprocess.run(
        [dlt_python(), "-c", DLT_SCRIPT, json.dumps(args)],
        capture_output=True,
        text=True,
        timeout=3600,
        check=False,
        cwd=tempfile.gettempdir(),
    )
    assert done.returncode == 0, f"dlt failed:\n{done.stderr[-4000:]}"
    seconds: list[float] = json.loads(done.stdout.strip().splitlines()[-1])
    return seconds


def count_rows(dest: Destination, namespace: str, table: str) -> int:
    session = connection.connect(target_of(dest.config, dest.secrets, 1), {}, 5, 60)
    try:
        return session.catalog.load_table((namespace, table)).scan().to_arrow().num_rows
    finally:
        connection.close(session)


def drop(dest: Destination, namespace: str) -> None:
    session = connection.connect(target_of(dest.config, dest.secrets, 1), {}, 5, 60)
    try:
        for identifier in session.catalog.list_tables(namespace):
            session.catalog.purge_table(identifier)
        session.catalog.drop_namespace(namespace)
    except Exception as exc:  # cleanup only: say so, go on
        print(f"  (could not drop {namespace}: {exc})")
    finally:
        connection.close(session)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--batch-rows", type=int, default=5_000)
    parser.add_argument("--lease-batches", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    runtime.quick_gil_handoff()  # as the loader process does
    runtime.tune_gc()
    lakehouse.ensure_lakehouse()
    shared = SharedSettings()
    s3 = s3_client(shared)
    objects = Objects(shared, timeout_s=60.0)  # as the loader reads batch objects
    rng = random.Random(1)
    run = uuid.uuid4().hex[:8]
    header = Header(1, "orders", ("id",), None, None, "2026-11-26T10:00:00.000000Z", "b", "push")
    records = [make_record(i, rng) for i in range(args.rows)]
    keys = []
    for start in range(0, args.rows, args.batch_rows):
        lines = [header.encode()] + [
            orjson.dumps({"action": "upsert", "sequence": i + 1, "data": records[i]})
            for i in range(start, min(args.rows, start + args.batch_rows))
        ]
        key = f"bench/iceberg/{run}/{start:012d}.jsonl.gz"
        s3.put_object(Bucket=shared.s3_bucket, Key=key, Body=gzip.compress(b"\n".join(lines), 1))
        keys.append(key)
    print(
        f"{args.rows:,} records in {len(keys)} batch objects, {args.lease_batches} to a lease; "
        f"catalog: SQL in {lakehouse.LAKEHOUSE_DB} on 127.0.0.1:5433, data: s3://{LAKE_BUCKET}/"
    )

    target = IcebergWarehouse(connect_timeout_s=10, request_timeout_s=300)
    namespaces: list[tuple[Destination, str]] = []
    skein_new: list[float] = []
    skein_upd: list[float] = []
    dlt_new: list[float] = []
    dlt_upd: list[float] = []
    batch_ids = itertools.count(1)
    try:
        for n in range(args.repeat):
            namespace = f"bench_skein_{run}_{n}"
            dest = destination(namespace, f"bench/{run}/skein{n}")
            namespaces.append((dest, namespace))
            session = target.open(dest)
            try:

                def load_all(session: Any = session, dest: Destination = dest) -> float:
                    began = time.monotonic()
                    for start in range(0, len(keys), args.lease_batches):
                        group = keys[start : start + args.lease_batches]
                        ids = [next(batch_ids) for _ in group]
                        lease = Lease(f"bench-{run}-{ids[0]}", 1, "orders", "iceberg", "", ())
                        stream = itertools.chain.from_iterable(
                            events(lines_of(s3_chunks(objects, key))) for key in group
                        )
                        target.load(session, dest, lease, ids, stream)
                    return time.monotonic() - began

                skein_new.append(args.rows / load_all())
                skein_upd.append(args.rows / load_all())
            finally:
                target.close(session)
            assert count_rows(dest, namespace, "orders") == args.rows
            print(f"  skein run {n + 1}: {skein_new[-1]:,.0f} new, {skein_upd[-1]:,.0f} updates/s")

            dataset = f"bench_dlt_{run}_{n}"
            dlt_dest = destination(dataset, f"bench/{run}/dlt{n}", DLT_CATALOG)
            namespaces.append((dlt_dest, dataset))
            first, second = dlt_run(args.rows, dataset, f"bench/{run}/dlt{n}")
            dlt_new.append(args.rows / first)
            dlt_upd.append(args.rows / second)
            print(f"  dlt run {n + 1}: {dlt_new[-1]:,.0f} new, {dlt_upd[-1]:,.0f} updates/s")
            assert count_rows(dlt_dest, dataset, "orders") == args.rows
    finally:
        for key in keys:
            s3.delete_object(Bucket=shared.s3_bucket, Key=key)
        for dest, namespace in namespaces:
            drop(dest, namespace)

    for what, mine, theirs in (
        ("new keys", skein_new, dlt_new),
        ("updates ", skein_upd, dlt_upd),
    ):
        ours, base = statistics.median(mine), statistics.median(theirs)
        print(
            f"{what}: skein {ours:,.0f} records/s, {DLT_VERSION} {base:,.0f} records/s "
            f"(median of {args.repeat}); ratio {ours / base:.2f} (target >= 2)"
        )


if __name__ == "__main__":
    main()
