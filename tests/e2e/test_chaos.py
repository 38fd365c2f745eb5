"""Chaos at scale 1 (``support.chaos``: load, seeded kills and outages, then every acknowledged
record exactly once), and a warehouse restart that must cost no load a retry. CI runs the chaos
at scale 2 too, inside ``test_scale.py``'s scaled stack.

    SKEIN_CHAOS_SCALES   the profiles this module runs the chaos in, instances of every Skein
                         service (default "1"; `make chaos SCALE=2`: 2); the rest of the
                         SKEIN_CHAOS_* settings: ``support/chaos.py``
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from support import chaos
from support.stack import scaled, stack, wait_for
from support.tenants import batches, new_tenant, push, rows
from support.warehouse import DEMO_WAREHOUSE

SCALES = [int(n) for n in os.environ.get("SKEIN_CHAOS_SCALES", "1").split(",")]

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture
def report(capsys: pytest.CaptureFixture[str]) -> Iterator[chaos.Report]:
    with chaos.reporting(capsys.disabled) as r:
        yield r


@pytest.fixture(params=SCALES, ids=[f"scale{n}" for n in SCALES])
def scale(request: pytest.FixtureRequest) -> Iterator[int]:
    """The stack at this many instances of every Skein service for the run, then back at 1."""
    n: int = request.param
    with scaled(n):
        yield n


@pytest.mark.timeout(chaos.TIMEOUT_S)
def test_acknowledged_records_land_exactly_once_through_chaos(
    report: chaos.Report, scale: int
) -> None:
    chaos.run(report, scale)


def test_a_warehouse_restart_costs_no_load_retry() -> None:
    """The loader's cached warehouse connections die with a restart; the next load of each
    table must still succeed at once (a failed attempt would cost the table a back-off)."""
    tenant = new_tenant("e2e", DEMO_WAREHOUSE)
    tables = [f"t{i}" for i in range(4)]
    for table in tables:  # the loader's workers now hold connections for this client
        push(tenant, table, [{"id": 1}])
    for table in tables:
        wait_for(lambda t=table: rows(tenant, t), timeout=120, interval=0.5, what=table)
    before = {b["batch_id"] for b in batches(tenant.client_id)}
    try:
        stack("pg-stop", "warehouse")
    finally:
        stack("pg-start", "warehouse")
    for table in tables:
        push(tenant, table, [{"id": 2}], first_seq=10)
    for table in tables:
        wait_for(lambda t=table: len(rows(tenant, t)) == 2, timeout=120, interval=0.5, what=table)
    after = [b for b in batches(tenant.client_id) if b["batch_id"] not in before]
    assert len(after) == len(tables)
    assert [(b["table_name"], b["last_error"]) for b in after if b["last_error"]] == []
