"""The Iceberg loader in the whole pipeline: gate -> Kafka -> streamery -> spool -> its own
loader process -> an Iceberg table (SQL catalog in ``lakehouse`` on the demo-warehouse cluster,
data files in the stack's S3 bucket ``lake``, the one ``SKEIN_DESTINATION_PLATFORM_S3_BUCKETS``
lets destinations use), read back through pyiceberg. The destination is set with ``skein
destinations set`` as an operator would; the platform's batch bucket is refused. A loader
SIGKILLed just before and just after its catalog commit leaves the rows exact, each batch
committed by one lease's commit."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import closing, suppress
from pathlib import Path
from typing import Any

import pytest

from common import db
from common.settings import SharedSettings
from services.loaders.core.protocol import Destination
from services.loaders.iceberg import connection
from services.loaders.iceberg.destination import target_of
from services.loaders.iceberg.statements import BATCH_IDS, LEASE
from support import lakehouse
from support.processes import loader_dying_at
from support.stack import ROOT, demo_warehouse_secrets, stack, wait_for
from support.tenants import Tenant, batches, new_tenant, push
from support.warehouse import DEMO_WAREHOUSE

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
SKEIN = str(ROOT / ".venv" / "bin" / "skein")
LAKE_BUCKET = "lake"


def skein(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SKEIN, *args],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture(scope="module")
def iceberg_loader() -> Iterator[None]:
    """The stack's Iceberg loader running for these tests; stopped afterwards unless it ran."""
    lakehouse.ensure_lakehouse()
    started = not (ROOT / ".run" / "pids" / "loaders.iceberg.pid").exists()
    stack("start", "loaders.iceberg")
    yield
    if started:
        stack("stop", "loaders.iceberg")


@pytest.fixture
def tenant() -> Iterator[Tenant]:
    """A client whose destination is an Iceberg namespace of its own (its ``schema``)."""
    client = new_tenant("e2e-iceberg")
    namespace = f"e2e_{uuid.uuid4().hex[:8]}"
    done = set_lake(client.client_id, namespace, f"s3://{LAKE_BUCKET}/e2e/{namespace}")
    assert done.returncode == 0, done.stdout + done.stderr
    yield Tenant(client.client_id, client.token, namespace)
    with closing(db.connect()) as conn, conn, conn.cursor() as cur:
        cur.execute(
            "UPDATE batches SET state = 'skipped' WHERE client_id = %s "
            "AND state IN ('pending', 'retry_wait', 'dead')",
            (client.client_id,),
        )
    with suppress(Exception):  # nothing was loaded when a test failed early
        lakehouse.drop_namespace(destination_of(client.client_id, namespace))


def lake_settings(namespace: str, warehouse: str) -> list[str]:
    shared = SharedSettings()
    dsn = {**DEMO_WAREHOUSE, "dbname": lakehouse.LAKEHOUSE_DB}
    return [
        "--dsn", " ".join(f"{k}={v}" for k, v in dsn.items()),
        "--password-env", "SKEIN_TEST_CATALOG_PASSWORD",
        "--schema", namespace,
        "--set", f"warehouse={warehouse}",
        "--set", f"s3_endpoint={shared.s3_endpoint}",
        "--set", f"aws_access_key_id={shared.s3_access_key}",
        "--secret-env", "aws_secret_access_key=SKEIN_TEST_LAKE_SECRET",
    ]  # fmt: skip


def lake_env() -> dict[str, str]:
    return {
        "SKEIN_TEST_CATALOG_PASSWORD": demo_warehouse_secrets()["password"],
        "SKEIN_TEST_LAKE_SECRET": SharedSettings().s3_secret_key.get_secret_value(),
    }


def set_lake(client_id: int, namespace: str, warehouse: str) -> subprocess.CompletedProcess[str]:
    """``skein clients allow --s3-endpoint`` (an operator's grant), then ``skein destinations
    set CLIENT iceberg``; returns the second's outcome."""
    allowed = skein(
        "clients", "allow", str(client_id), "--s3-endpoint", SharedSettings().s3_endpoint
    )
    assert allowed.returncode == 0, allowed.stderr
    return skein(
        "destinations", "set", str(client_id), "iceberg", *lake_settings(namespace, warehouse),
        env=lake_env(),
    )  # fmt: skip


def destination_of(client_id: int, namespace: str) -> Destination:
    shared = SharedSettings()
    config = {
        "dsn_params": {**DEMO_WAREHOUSE, "dbname": lakehouse.LAKEHOUSE_DB},
        "warehouse": f"s3://{LAKE_BUCKET}/e2e/{namespace}",
        "namespace": namespace,
        "s3_endpoint": shared.s3_endpoint,
        "aws_access_key_id": shared.s3_access_key,
    }
    secrets = {
        **demo_warehouse_secrets(),
        "aws_secret_access_key": shared.s3_secret_key.get_secret_value(),
    }
    return Destination(client_id, "iceberg", config, secrets)


def read_table(tenant: Tenant, table: str) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """The table's rows through pyiceberg (sorted by id) and its snapshots' summaries; nothing
    while the table does not exist."""
    destination = destination_of(tenant.client_id, tenant.schema)
    session = connection.connect(target_of(destination.config, destination.secrets, 1), {}, 5, 60)
    try:
        identifier = (tenant.schema, table)
        if not session.catalog.table_exists(identifier):
            return [], []
        loaded = session.catalog.load_table(identifier)
        rows = sorted(loaded.scan().to_arrow().to_pylist(), key=lambda r: r["id"])
        summaries = [dict(s.summary.additional_properties) for s in loaded.snapshots() if s.summary]
        return rows, summaries
    finally:
        connection.close(session)


def all_loaded(tenant: Tenant) -> bool:
    found = batches(tenant.client_id)
    return bool(found) and {b["state"] for b in found} == {"loaded"}


def test_records_land_in_an_iceberg_table_on_the_lake_bucket(
    iceberg_loader: None, tenant: Tenant
) -> None:
    # The platform's batch bucket is never a destination's, whatever the operator listed.
    refused = set_lake(tenant.client_id, tenant.schema, f"s3://{SharedSettings().s3_bucket}/x")
    assert refused.returncode != 0 and "platform's batch bucket" in refused.stdout
    shown = json.loads(skein("destinations", "show", str(tenant.client_id)).stdout)
    assert shown["config"]["warehouse"] == f"s3://{LAKE_BUCKET}/e2e/{tenant.schema}"

    push(tenant, "orders", [{"id": 1, "address": {"city": "Oslo"}}, {"id": 2, "tags": ["a"]}])
    push(tenant, "orders", [{"id": 1, "address": {"city": "Bergen"}}], first_seq=3)

    expected = [(1, {"city": "Bergen"}, None), (2, None, ["a"])]

    def landed() -> list[dict[str, str]] | None:
        rows, summaries = read_table(tenant, "orders")
        got = [(r["id"], r["address"], r["tags"]) for r in rows]
        return summaries if got == expected and all_loaded(tenant) else None

    summaries = wait_for(landed, timeout=90, interval=1, what="the rows in the Iceberg table")
    committed = {i for s in summaries for i in s.get(BATCH_IDS, "").split(",") if i}
    assert committed == {str(b["batch_id"]) for b in batches(tenant.client_id)}


@pytest.mark.parametrize("point", ["before_commit", "after_commit"])
def test_a_loader_killed_at_its_commit_leaves_exact_rows(
    point: str, tmp_path: Path, iceberg_loader: None, tenant: Tenant
) -> None:
    marker = tmp_path / f"fault-{point}"
    with loader_dying_at("iceberg", point, marker, metrics_port=19109) as faulty:
        for n in range(3):  # three requests: one batch each, or fewer when the streamery joins
            ids = range(n * 20, n * 20 + 20)
            push(tenant, "payments", [{"id": i, "amount": i * 10} for i in ids], n * 20 + 1)
        faulty.wait(timeout=90)
        assert faulty.returncode == -9, "the loader should have died at the fault point"
        assert marker.read_text() == point
    expected = [(i, i * 10) for i in range(60)]

    def landed() -> list[dict[str, str]] | None:
        rows, summaries = read_table(tenant, "payments")
        got = [(r["id"], r["amount"]) for r in rows]
        assert len(got) == len({r[0] for r in got}), "a duplicate row"
        return summaries if got == expected and all_loaded(tenant) else None

    # The stack's loader is back; the dead one's lease expires (12 s) and is leased again.
    summaries = wait_for(landed, timeout=90, interval=1, what="exact rows in the Iceberg table")
    # Each batch was committed by one lease (a commit may write more than one snapshot, each
    # carrying the ids): never twice.
    leases_of: dict[str, set[str]] = {}
    for summary in summaries:
        for batch_id in filter(None, summary.get(BATCH_IDS, "").split(",")):
            leases_of.setdefault(batch_id, set()).add(summary[LEASE])
    assert set(leases_of) == {str(b["batch_id"]) for b in batches(tenant.client_id)}
    assert all(len(leases) == 1 for leases in leases_of.values()), leases_of
