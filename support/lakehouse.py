"""The local stack's lakehouse, for the Iceberg loader's tests and benchmarks: a SQL catalog in
the ``lakehouse`` database of the demo-warehouse cluster (127.0.0.1:5433), data files in the
stack's S3 (SeaweedFS, bucket ``skein``, under ``lake/``), and a second reader of the same
tables, DuckDB with its Iceberg extension, in a virtualenv of its own.

DuckDB's extensions are published on PyPI (``duckdb-extension-iceberg``, ``-httpfs``,
``-avro``) for the DuckDB release they were built for, which is not the one the project's
virtualenv holds (fakesnow pins DuckDB 2.0, for which no Iceberg extension is published yet):
so ``duckdb_rows`` runs DuckDB 1.5.5 and its extensions from ``.cache/venv-duckdb-iceberg-*``,
installed on first use, as a subprocess that prints the rows as JSON.
"""

from __future__ import annotations

import json
import subprocess
import sys
from contextlib import closing
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from psycopg2 import sql

from common.settings import SharedSettings
from services.loaders.core.protocol import Destination
from support.stack import ROOT, demo_warehouse_secrets
from support.warehouse import DEMO_WAREHOUSE, warehouse

LAKEHOUSE_DB = "lakehouse"
DUCKDB_VERSION = "1.5.5"
DUCKDB_PACKAGES = [
    f"duckdb=={DUCKDB_VERSION}",
    *(f"duckdb-extension-{e}=={DUCKDB_VERSION}" for e in ("iceberg", "httpfs", "avro")),
    "pytz",  # DuckDB hands timestamptz values to Python through it
]
DUCKDB_VENV = ROOT / ".cache" / f"venv-duckdb-iceberg-{DUCKDB_VERSION}"


def ensure_lakehouse() -> None:
    """The catalog's database exists on the demo-warehouse cluster."""
    with closing(warehouse()) as conn, conn.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (LAKEHOUSE_DB,))
        if cur.fetchone() is None:
            cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(LAKEHOUSE_DB)))


def destination(namespace: str, prefix: str, client_id: int = 1) -> Destination:
    """An Iceberg destination on the local stack: the lakehouse catalog, data under
    ``s3://skein/<prefix>``, the stack's own S3 key pair."""
    shared = SharedSettings()
    dsn = {**DEMO_WAREHOUSE, "dbname": LAKEHOUSE_DB}
    config = {
        "dsn_params": {**dsn, "port": int(dsn["port"])},
        "warehouse": f"s3://{shared.s3_bucket}/{prefix}",
        "namespace": namespace,
        "s3_endpoint": shared.s3_endpoint,
        "aws_access_key_id": shared.s3_access_key,
    }
    secrets = {
        **demo_warehouse_secrets(),
        "aws_secret_access_key": shared.s3_secret_key.get_secret_value(),
    }
    return Destination(client_id, "iceberg", config, secrets)


def drop_namespace(destination: Destination) -> None:
    """Every table of the namespace gone from the catalog (and the namespace)."""
    from services.loaders.iceberg import connection
    from services.loaders.iceberg.destination import target_of

    session = connection.connect(target_of(destination.config, destination.secrets, 1), {}, 5, 60)
    try:
        for identifier in session.catalog.list_tables(session.namespace):
            session.catalog.purge_table(identifier)
        session.catalog.drop_namespace(session.namespace)
    finally:
        connection.close(session)


_DUCKDB_SCRIPT = r"""
import json, sys
import duckdb
args = json.loads(sys.stdin.read())
import importlib, pathlib
con = duckdb.connect(config={"autoinstall_known_extensions": "false"})
for name in ("httpfs", "avro", "iceberg"):
    package = importlib.import_module("duckdb_extension_" + name)
    found = next(pathlib.Path(package.__file__).parent.glob("extensions/*/*.duckdb_extension"))
    con.execute("LOAD '" + str(found).replace("'", "''") + "'")
def quoted(text):
    return "'" + str(text).replace("'", "''") + "'"
con.execute(
    "CREATE SECRET lake (TYPE s3, KEY_ID " + quoted(args["key_id"]) + ", SECRET "
    + quoted(args["secret"]) + ", ENDPOINT " + quoted(args["endpoint"])
    + ", URL_STYLE 'path', USE_SSL " + ("true" if args["ssl"] else "false")
    + ", REGION 'us-east-1')"
)
rel = con.execute("SELECT * FROM iceberg_scan($1)", [args["metadata"]])
names = [d[0] for d in rel.description]
rows = [dict(zip(names, row)) for row in rel.fetchall()]
import datetime, decimal
def plain(value):
    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, datetime.datetime | datetime.date):
        return value.isoformat()
    return str(value)
print(json.dumps(rows, default=plain))
"""


def duckdb_python() -> str:
    """DuckDB's own virtualenv (installed on first use)."""
    python = DUCKDB_VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(DUCKDB_VENV)], check=True)
        subprocess.run(
            [str(DUCKDB_VENV / "bin" / "pip"), "install", "-q", *DUCKDB_PACKAGES], check=True
        )
    return str(python)


def duckdb_rows(metadata_location: str) -> list[dict[str, Any]]:
    """The table's rows as DuckDB's ``iceberg_scan`` reads its metadata file (values as JSON:
    timestamps and decimals as text)."""
    shared = SharedSettings()
    endpoint = shared.s3_endpoint
    args = {
        "metadata": metadata_location,
        "key_id": shared.s3_access_key,
        "secret": shared.s3_secret_key.get_secret_value(),
        "endpoint": endpoint.split("://", 1)[1],
        "ssl": endpoint.startswith("https://"),
    }
    done = subprocess.run(
        [duckdb_python(), "-c", _DUCKDB_SCRIPT],
        input=json.dumps(args),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, f"duckdb failed:\n{done.stderr[-3000:]}"
    rows: list[dict[str, Any]] = json.loads(done.stdout)
    return rows


def comparable(value: Any) -> Any:
    """A value as DuckDB's JSON and pyiceberg's Python both give it, compared alike."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: comparable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [comparable(v) for v in value]
    return value
