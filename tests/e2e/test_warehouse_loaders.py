"""The Snowflake and Redshift loader processes on the local stack: configured with
``skein destinations set``, each its own process with its own /metrics; a record pushed to the
gate becomes a Snowflake row (fakesnow behind the real connector), and a load into an
unreachable Redshift is a transient failure: the batch waits for a retry, it is not parked."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from common import db
from support.processes import loader_dying_at
from support.snowflake import connect, fakesnow_server, select
from support.stack import ROOT, stack, wait_for
from support.tenants import Tenant, batches, new_tenant, push

pytestmark = pytest.mark.e2e
SKEIN = str(ROOT / ".venv" / "bin" / "skein")


def skein(*args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    done = subprocess.run(
        [SKEIN, *args],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, **(env or {})},
    )
    assert done.returncode == 0, done.stderr
    parsed: dict[str, Any] = json.loads(done.stdout)
    return parsed


@pytest.fixture
def tenant() -> Iterator[Tenant]:
    client = new_tenant("warehouse-loaders")
    yield client
    # Its warehouse goes away with the test: nothing of it may keep retrying on the shared stack.
    with closing(db.connect()) as conn, conn, conn.cursor() as cur:
        cur.execute(
            "UPDATE batches SET state = 'skipped' WHERE client_id = %s "
            "AND state IN ('pending', 'retry_wait', 'dead')",
            (client.client_id,),
        )


def running(service: str) -> Iterator[None]:
    """The loader process running for the test; stopped afterwards unless it already ran."""
    pidfile = ROOT / ".run" / "pids" / f"{service}.pid"
    started = not pidfile.exists()
    stack("start", service)
    yield
    if started:
        stack("stop", service)


@pytest.fixture(scope="module")
def snowflake_loader() -> Iterator[None]:
    yield from running("loaders.snowflake")


@pytest.fixture(scope="module")
def redshift_loader() -> Iterator[None]:
    yield from running("loaders.redshift")


@pytest.fixture(scope="module")
def fakesnow() -> Iterator[dict[str, Any]]:
    with fakesnow_server() as config:
        yield config


def loads(port: int, kind: str, result: str) -> float:
    """Sum of ``skein_loader_loads_total`` for this destination type and result."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "skein_loader_loads_total"
        and sample.labels.get("destination_type") == kind
        and sample.labels.get("result") == result
    )


def test_records_reach_snowflake_through_its_own_loader(
    fakesnow: dict[str, Any], snowflake_loader: None, tenant: Tenant
) -> None:
    client = tenant
    schema = f"e2e_{uuid.uuid4().hex[:8]}"
    settings = [f"--set={k}={v}" for k, v in fakesnow.items()]
    shown = skein(
        "destinations", "set", str(client.client_id), "snowflake", "--schema", schema,
        *settings, "--secret-env", "password=SKEIN_TEST_SF_PASSWORD",
        env={"SKEIN_TEST_SF_PASSWORD": "snow"},
    )  # fmt: skip
    assert shown["type"] == "snowflake" and shown["secrets_set"] == ["password"]
    before = loads(9106, "snowflake", "ok")
    push(client, "Orders", [{"id": 1, "address": {"city": "Oslo"}}, {"id": 2, "tags": ["a"]}])

    def loaded() -> list[dict[str, Any]]:
        with closing(connect(fakesnow)) as conn:  # a new session sees the loader's commits
            cur = conn.cursor()
            cur.execute(
                "SELECT TABLE_NAME FROM INFORMATION_SCHEMA.TABLES WHERE TABLE_SCHEMA = ?",
                [schema.upper()],
            )
            tables = [r[0] for r in cur.fetchall() if r[0].startswith("ORDERS")]
            if not tables:
                return []
            return select(
                conn, schema.upper(), tables[0], ["ID", "ADDRESS", "TAGS"], {"ADDRESS", "TAGS"}
            )

    got = wait_for(loaded, timeout=180, interval=1, what="rows in fakesnow")
    assert sorted(got, key=lambda r: r["ID"]) == [
        {"ID": 1, "ADDRESS": {"city": "Oslo"}, "TAGS": None},
        {"ID": 2, "ADDRESS": None, "TAGS": ["a"]},
    ]
    assert wait_for(lambda: loads(9106, "snowflake", "ok") > before, timeout=30, what="metrics")


def test_an_unreachable_redshift_is_retried_with_back_off_not_parked(
    redshift_loader: None, tenant: Tenant
) -> None:
    client = tenant
    skein(
        "clients", "allow", str(client.client_id),
        "--redshift-role", "arn:aws:iam::123456789012:role/skein-test",
    )  # fmt: skip
    skein(
        "destinations", "set", str(client.client_id), "redshift",
        "--dsn", "postgresql://loader@127.0.0.1:1/dev", "--set", "s3_bucket=skein",
        "--set", "iam_role=arn:aws:iam::123456789012:role/skein-test",
        "--password-env", "SKEIN_TEST_RS_PASSWORD", env={"SKEIN_TEST_RS_PASSWORD": "pw"},
    )  # fmt: skip
    push(client, "events", [{"id": 1}])

    def waiting() -> list[dict[str, Any]]:
        return [b for b in batches(client.client_id) if b["state"] == "retry_wait"]

    parked = wait_for(waiting, timeout=90, what="the batch to wait for a retry")
    assert "warehouse unavailable" in parked[0]["last_error"]
    health = httpx.get("http://127.0.0.1:9104/healthz", timeout=5)
    assert health.status_code == 200
    assert loads(9104, "redshift", "transient") >= 1


@pytest.mark.slow
@pytest.mark.parametrize("point", ["before_commit", "after_commit"])
def test_snowflake_loader_killed_mid_load_leaves_exact_rows(
    point: str, tmp_path: Path, fakesnow: dict[str, Any], tenant: Tenant
) -> None:
    schema = f"crash_{uuid.uuid4().hex[:8]}"
    skein(
        "destinations", "set", str(tenant.client_id), "snowflake", "--schema", schema,
        *[f"--set={k}={v}" for k, v in fakesnow.items()],
        "--secret-env", "password=SKEIN_TEST_SF_PASSWORD", env={"SKEIN_TEST_SF_PASSWORD": "snow"},
    )  # fmt: skip
    was_running = (ROOT / ".run" / "pids" / "loaders.snowflake.pid").exists()
    marker = tmp_path / f"fault-{point}"
    with loader_dying_at("snowflake", point, marker, metrics_port=19106) as faulty:
        push(tenant, "payments", [{"id": i, "amount": i * 10} for i in range(50)])
        faulty.wait(timeout=180)
        assert faulty.returncode == -9, "the loader should have died at the fault point"
    try:

        def acknowledged() -> bool:
            return {b["state"] for b in batches(tenant.client_id)} == {"loaded"}

        wait_for(acknowledged, timeout=180, interval=1, what="every batch acknowledged")
        with closing(connect(fakesnow)) as conn:
            cur = conn.cursor()
            table = f"{schema.upper()}.PAYMENTS"
            cur.execute(f"SELECT ID, AMOUNT FROM {table} ORDER BY ID")
            assert cur.fetchall() == [(i, i * 10) for i in range(50)]
            cur.execute(
                f"SELECT COUNT(*), COUNT(DISTINCT BATCH_ID) FROM {schema.upper()}._SDC_LOADS"
            )
            total, distinct = cur.fetchone()
            assert total == distinct >= 1  # each batch recorded once: loaded exactly once
    finally:
        if not was_running:
            stack("stop", "loaders.snowflake")
