"""The BigQuery loader in the whole pipeline: gate -> Kafka -> streamery -> spool -> its own
loader process -> BigQuery (goccy/bigquery-emulator). A BigQuery destination that fails stalls
only its own client: the Postgres loader's clients and a healthy BigQuery client keep flowing,
and the failing client's batches wait (transient, never dead) and load once it is fixed."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from common import db
from common.settings import SharedSettings
from services.control import destinations
from services.loaders.bigquery import statements
from services.loaders.bigquery.connection import connect
from services.loaders.bigquery.destination import BigQueryTarget
from support import bigquery_emulator
from support.processes import stop_process
from support.stack import ROOT, free_port, wait_for
from support.tenants import Tenant, batches, new_tenant, push, rows
from support.warehouse import DEMO_WAREHOUSE

# The first test on a machine builds the emulator (~12 min on 2 cores; cached afterwards).
pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(1800)]
METRICS_PORT = 19105


def bigquery_tenant(endpoint: str) -> Tenant:
    """A client whose destination is a dataset of its own (its ``schema``) at ``endpoint``."""
    tenant = replace(new_tenant("e2e-bigquery"), schema=f"e2e_{uuid.uuid4().hex[:8]}")
    point_at(tenant, endpoint)
    return tenant


def point_at(tenant: Tenant, endpoint: str) -> None:
    with closing(db.connect()) as conn:
        destinations.set_destination(
            conn,
            SharedSettings().secret_key.get_secret_value(),
            tenant.client_id,
            "bigquery",
            {
                "project": bigquery_emulator.PROJECT,
                "schema": tenant.schema,
                "api_endpoint": endpoint,
            },
            {},
        )


def bq_ids(endpoint: str, tenant: Tenant, table: str) -> list[int]:
    session = connect(
        BigQueryTarget(bigquery_emulator.PROJECT, tenant.schema, api_endpoint=endpoint), 5, 30
    )
    target = statements.Dataset(bigquery_emulator.PROJECT, tenant.schema).table(table)
    try:
        job = session.client.query(f"SELECT id FROM {target} ORDER BY id")
        return [int(r[0]) for r in job.result()]
    except Exception:  # the dataset or table does not exist yet
        return []
    finally:
        session.client.close()


@pytest.fixture(scope="module")
def emulator() -> Iterator[str]:
    with bigquery_emulator.running() as endpoint:
        yield endpoint


@contextmanager
def loader_process(**settings: str) -> Iterator[subprocess.Popen[bytes]]:
    """A BigQuery loader process (``SKEIN_LOADER_BIGQUERY_<KEY>=value`` for each setting)."""
    env = {
        **os.environ,
        "SKEIN_LOADER_BIGQUERY_METRICS_PORT": str(METRICS_PORT),
        "SKEIN_LOADER_BIGQUERY_DESTINATION_CACHE_S": "1",
        "SKEIN_LOADER_BIGQUERY_REQUEST_TIMEOUT_S": "3",
        **{f"SKEIN_LOADER_BIGQUERY_{k.upper()}": v for k, v in settings.items()},
    }
    with open(ROOT / ".run" / "logs" / "loader-bigquery-e2e.log", "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "services.loaders.bigquery"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=log,
        )
    try:
        yield proc
    finally:
        stop_process(proc, 40)


@pytest.fixture
def bigquery_loader() -> Iterator[None]:
    with loader_process():
        wait_for(lambda: metrics() is not None, timeout=60, what="the BigQuery loader's /metrics")
        yield


def metrics() -> str | None:
    try:
        return httpx.get(f"http://127.0.0.1:{METRICS_PORT}/metrics", timeout=2).text
    except httpx.HTTPError:
        return None


def test_a_failing_bigquery_destination_stalls_only_its_own_client(
    emulator: str, bigquery_loader: None
) -> None:
    broken = bigquery_tenant(f"http://127.0.0.1:{free_port()}")
    healthy = bigquery_tenant(emulator)
    postgres = new_tenant("e2e", DEMO_WAREHOUSE)
    records = [{"id": i, "name": f"n{i}", "address": {"city": "Oslo"}} for i in range(20)]
    for tenant in (broken, healthy, postgres):
        push(tenant, "customers", records)

    wait_for(
        lambda: len(rows(postgres, "customers")) == 20,
        timeout=120,
        interval=1,
        what="the Postgres client's rows while a BigQuery destination fails",
    )
    wait_for(
        lambda: bq_ids(emulator, healthy, "customers") == list(range(20)),
        timeout=120,
        interval=1,
        what="the healthy BigQuery client's rows",
    )
    # The broken client's batches were tried, failed as transient, and wait for a retry.
    failed = wait_for(
        lambda: [b for b in batches(broken.client_id) if b["last_error_kind"]],
        timeout=60,
        interval=1,
        what="a failed attempt of the broken client's batches",
    )
    assert {b["last_error_kind"] for b in failed} == {"transient"}, failed
    assert all("BigQuery" in (b["last_error"] or "") for b in failed), failed
    assert {b["state"] for b in batches(broken.client_id)} <= {"pending", "leased", "retry_wait"}
    text = metrics() or ""
    assert 'destination_type="bigquery"' in text and 'result="transient"' in text

    # Fixed: its batches load on the next retry, each row once.
    point_at(broken, emulator)
    wait_for(
        lambda: bq_ids(emulator, broken, "customers") == list(range(20)),
        timeout=180,
        interval=2,
        what="the once-broken client's rows after its destination was fixed",
    )
    wait_for(
        lambda: {b["state"] for b in batches(broken.client_id)} == {"loaded"},
        timeout=60,
        what="its batches acknowledged",
    )
    nested = connect(
        BigQueryTarget(bigquery_emulator.PROJECT, broken.schema, api_endpoint=emulator), 5, 30
    )
    target = statements.Dataset(bigquery_emulator.PROJECT, broken.schema).table("customers")
    got = nested.client.query(f"SELECT address FROM {target} WHERE id = 3").result()
    assert [dict(r.items()) for r in got] == [{"address": {"city": "Oslo"}}]  # kept nested
    nested.client.close()


def loaded_ids(endpoint: str, tenant: Tenant) -> list[int]:
    session = connect(
        BigQueryTarget(bigquery_emulator.PROJECT, tenant.schema, api_endpoint=endpoint), 5, 30
    )
    loads = statements.Dataset(bigquery_emulator.PROJECT, tenant.schema).table("_sdc_loads")
    try:
        return [int(r[0]) for r in session.client.query(f"SELECT batch_id FROM {loads}").result()]
    finally:
        session.client.close()


def test_loader_killed_after_its_commit_loads_each_row_once(emulator: str, tmp_path: Path) -> None:
    """SIGKILL between the commit and the ack: the batch is leased again, found in _sdc_loads
    and acknowledged without loading twice."""
    tenant = bigquery_tenant(emulator)
    marker = tmp_path / "fault-after_commit"
    with loader_process(
        fault="after_commit", fault_marker=str(marker), workers="1", lease_seconds="12"
    ) as faulty:
        push(tenant, "payments", [{"id": i, "amount": i * 10} for i in range(50)])
        faulty.wait(timeout=180)
        assert faulty.returncode == -9, "the loader should have died at the fault point"
    assert marker.exists()
    with loader_process(workers="1"):
        wait_for(
            lambda: {b["state"] for b in batches(tenant.client_id)} == {"loaded"},
            timeout=180,
            interval=1,
            what="every batch acknowledged after the restart",
        )
    assert bq_ids(emulator, tenant, "payments") == list(range(50))
    ids = loaded_ids(emulator, tenant)
    assert sorted(ids) == sorted(b["batch_id"] for b in batches(tenant.client_id))
    assert len(ids) == len(set(ids))  # no batch recorded twice
