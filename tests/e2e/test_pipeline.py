"""The whole pipeline on the local stack: gate -> Kafka -> streamery -> S3 + spool -> Postgres
loader -> the client's warehouse. Rows in the warehouse are what users see."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest
from psycopg2 import sql

from support.processes import loader_dying_at
from support.stack import scratch_database, stack, wait_for
from support.tenants import batches, new_tenant, push, rows
from support.warehouse import DEMO_WAREHOUSE

OTHER_WAREHOUSE_DB = "skein_e2e_other_warehouse"

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def other_warehouse() -> Iterator[dict[str, str]]:
    """A second, healthy warehouse server for another client (the control cluster)."""
    with scratch_database(OTHER_WAREHOUSE_DB):
        # The stack's loader allows only the demo warehouse (127.0.0.1:5433): restarted here,
        # it takes the suite's SKEIN_DESTINATION_ALLOWED_NETWORKS (tests/conftest.py), which
        # also allows this database on the control cluster (the control database itself stays
        # refused).
        stack("stop", "loaders.postgres")
        stack("start", "loaders.postgres")
        yield {
            "host": "127.0.0.1",
            "port": "5432",
            "dbname": OTHER_WAREHOUSE_DB,
            "user": "postgres",
        }


def test_a_record_pushed_to_the_gate_becomes_a_row() -> None:
    tenant = new_tenant("e2e", DEMO_WAREHOUSE)
    push(
        tenant,
        "customers",
        [
            {"id": i, "name": f"c{i}", "address": {"city": "Oslo"}, "tags": ["a", "b"]}
            for i in range(3)
        ],
    )
    got = wait_for(
        lambda: rows(tenant, "customers", "id,name,address__city"),
        timeout=180,
        interval=1,
        what="the rows in the client's warehouse",
    )
    wait_for(lambda: len(rows(tenant, "customers")) == 3, timeout=60, what="all three rows")
    got = rows(tenant, "customers", "id,name,address__city")
    assert got == [(0, "c0", "Oslo"), (1, "c1", "Oslo"), (2, "c2", "Oslo")]
    assert len(rows(tenant, "customers__tags", "_sdc_source_key_id")) == 6


@pytest.mark.slow
def test_a_down_warehouse_stalls_only_its_own_client(other_warehouse: dict[str, str]) -> None:
    down = new_tenant("e2e", DEMO_WAREHOUSE)
    healthy = new_tenant("e2e", other_warehouse)
    stack("pg-stop", "warehouse")
    try:
        push(down, "orders", [{"id": i} for i in range(50)])
        push(healthy, "orders", [{"id": i} for i in range(50)])
        wait_for(
            lambda: len(rows(healthy, "orders")) == 50,
            timeout=120,
            interval=1,
            what="the healthy client's rows while the other warehouse is down",
        )
        # Down until the stalled client's batch has failed twice: a retry, not just one refusal.
        wait_for(
            lambda: any(
                b["state"] == "retry_wait" and b["attempts"] >= 2 for b in batches(down.client_id)
            ),
            timeout=90,
            interval=0.5,
            what="the stalled client's batch to fail twice",
        )
        states = {b["state"] for b in batches(down.client_id)}
        assert "loaded" not in states and "dead" not in states, states
    finally:
        stack("pg-start", "warehouse")
    wait_for(
        lambda: len(rows(down, "orders")) == 50,
        timeout=240,
        interval=2,
        what="the stalled client's rows once its warehouse is back",
    )
    assert {b["state"] for b in batches(down.client_id)} == {"loaded"}
    assert {b["state"] for b in batches(healthy.client_id)} == {"loaded"}


@pytest.mark.slow
@pytest.mark.parametrize("point", ["before_commit", "after_commit"])
def test_loader_killed_mid_load_leaves_exact_rows(point: str, tmp_path: Path) -> None:
    tenant = new_tenant("e2e", DEMO_WAREHOUSE)
    marker = tmp_path / f"fault-{point}"
    with loader_dying_at("postgres", point, marker, metrics_port=19103) as faulty:
        push(tenant, "payments", [{"id": i, "amount": i * 10} for i in range(200)])
        push(
            tenant,
            "payments",
            [{"id": i, "amount": i * 11} for i in range(100, 300)],
            first_seq=1000,
        )
        faulty.wait(timeout=180)
        assert faulty.returncode == -9, "the loader should have died at the fault point"
        assert marker.exists()
    wait_for(
        lambda: len(rows(tenant, "payments")) == 300,
        timeout=240,
        interval=1,
        what="every row after the loader restarted",
    )
    got = rows(tenant, "payments", "id,amount")
    expected = [(i, i * 10) for i in range(100)] + [(i, i * 11) for i in range(100, 300)]
    assert got == expected
    wait_for(
        lambda: {b["state"] for b in batches(tenant.client_id)} == {"loaded"},
        timeout=120,
        what="every batch acknowledged",
    )
    with closing(tenant.connect()) as conn, conn.cursor() as cur:
        cur.execute(
            sql.SQL("SELECT count(*), count(DISTINCT batch_id) FROM {}").format(
                sql.Identifier(tenant.schema, "_sdc_loads")
            )
        )
        total, distinct = cur.fetchone()  # type: ignore[misc]
    assert total == distinct  # no batch recorded twice
