"""Scheduled extraction on the local stack with a real tap from PyPI (MeltanoLabs tap-postgres)
reading a real source database: source table -> tap -> built-in target -> gate -> ... -> the
client's warehouse. Rows in the warehouse, run history and /metrics are what users see.

The stack's extractor is replaced for this module by one with test-friendly settings (short
tick, small requests, short gate retry window and back-off) and restored afterwards.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx
import psycopg2
import pytest
from psycopg2 import sql

from common import db, tokens
from services.control import accounts
from services.extractor import integrations
from services.extractor.runs import list_runs
from support.processes import stop_process
from support.stack import ROOT, scratch_database, stack, stack_secret, wait_for
from support.tenants import set_postgres_destination
from support.warehouse import DEMO_WAREHOUSE

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

TAP = "meltanolabs-tap-postgres==0.10.0"
SOURCE_DB = "skein_e2e_extract_source"
SOURCE = {"host": "127.0.0.1", "port": 5432, "user": "postgres", "database": SOURCE_DB}
# The control cluster's generated password (the source database lives there): it must never leak.
SOURCE_PASSWORD = stack_secret("pg-control")
METRICS = "http://127.0.0.1:19107/metrics"
CREATED: list[str] = []  # integrations this module added: removed at its end, whatever happens
SKEIN = str(Path(sys.executable).parent / "skein")
EXTRACTOR_ENV = {
    "SKEIN_EXTRACTOR_METRICS_PORT": "19107",
    "SKEIN_EXTRACTOR_TICK_S": "0.5",
    "SKEIN_EXTRACTOR_BATCH_RECORDS": "200",
    "SKEIN_EXTRACTOR_FLUSH_INTERVAL_S": "1",
    "SKEIN_EXTRACTOR_GATE_RETRY_WINDOW_S": "3",
    "SKEIN_EXTRACTOR_GATE_TIMEOUT_S": "10",
    "SKEIN_EXTRACTOR_RETRY_BASE_S": "2",
    "SKEIN_EXTRACTOR_RETRY_CAP_S": "4",
    "SKEIN_EXTRACTOR_RUN_TIMEOUT_S": "240",
}


# --- helpers ---------------------------------------------------------------------------------


def skein(*args: str, timeout: float = 300) -> dict[str, Any]:
    done = subprocess.run(
        [SKEIN, *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, f"skein {' '.join(args)}: {done.stdout} {done.stderr}"
    answer: dict[str, Any] = json.loads(done.stdout)
    return answer


def source(statement: str | sql.Composed, params: tuple[Any, ...] = ()) -> None:
    with (
        closing(
            psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname=SOURCE_DB)
        ) as conn,
        conn,
        conn.cursor() as cur,
    ):
        cur.execute(statement, params)


def fill(table: str, first: int, last: int) -> None:
    source(
        sql.SQL(
            "INSERT INTO {} (id, name, amount, updated_at)"
            " SELECT g, 'name ' || g, g * 1.25, now() FROM generate_series(%s, %s) g"
        ).format(sql.Identifier(table)),
        (first, last),
    )


def source_table(name: str, rows: int) -> None:
    source(
        sql.SQL(
            "CREATE TABLE {} (id bigint PRIMARY KEY, name text, amount numeric(12, 2),"
            " updated_at timestamptz)"
        ).format(sql.Identifier(name))
    )
    fill(name, 1, rows)


def warehouse_ids(schema: str, table: str) -> list[int]:
    try:
        with (
            closing(psycopg2.connect(connect_timeout=3, **DEMO_WAREHOUSE)) as conn,
            conn.cursor() as cur,
        ):
            cur.execute(
                sql.SQL("SELECT id FROM {} ORDER BY id").format(sql.Identifier(schema, table))
            )
            return [r[0] for r in cur.fetchall()]
    except (psycopg2.errors.UndefinedTable, psycopg2.OperationalError):
        return []


def new_client() -> tuple[int, str]:
    schema = f"e2e_ext_{uuid.uuid4().hex[:8]}"
    with closing(db.connect()) as conn:
        client_id = int(accounts.create_client(conn, "e2e-extractor")["client_id"])
        set_postgres_destination(conn, client_id, DEMO_WAREHOUSE, schema)
    return client_id, schema


def add_integration(tmp: Path, table: str, schedule: str = "0 0 1 1 *") -> tuple[str, int, str]:
    """(integration name, client id, warehouse schema) of a new incremental integration."""
    client_id, schema = new_client()
    config = tmp / f"{table}.json"
    config.write_text(
        json.dumps({**SOURCE, "password": SOURCE_PASSWORD, "filter_schemas": ["public"]})
    )
    name = f"e2e-{table}-{uuid.uuid4().hex[:6]}"
    CREATED.append(name)
    added = skein(
        "integrations", "add", str(client_id), name, "--tap", TAP, "--config", str(config),
        "--schedule", schedule, "--select", f"public-{table}",
        "--replication-key", f"public-{table}=id",
    )  # fmt: skip
    assert added["streams"] == [
        {"stream": f"public-{table}", "replication_method": "INCREMENTAL", "replication_key": "id"}
    ]
    assert added["secret_keys"] == ["password"]
    return name, client_id, schema


def runs(name: str, stderr: bool = False) -> list[dict[str, Any]]:
    """What `skein integrations runs NAME` prints, oldest first (read directly: tests poll it)."""
    with closing(db.connect()) as conn:
        return list_runs(conn, name, 100, stderr)[::-1]


def integration(name: str, client_id: int) -> dict[str, Any]:
    with closing(db.connect()) as conn:
        found = integrations.get(conn, name)
    assert found is not None and found["client_id"] == client_id
    return found


def bookmark(name: str, client_id: int) -> int | None:
    state = integration(name, client_id)["state"]
    if not state:
        return None
    value = next(iter(state["bookmarks"].values())).get("replication_key_value")
    return None if value is None else int(value)


def run_until_a_state_is_saved(
    name: str, client_id: int, what: str = "a state saved while the run is still going"
) -> None:
    """Start a run of ``name`` and wait until it has saved a bookmark and is still running."""
    skein("integrations", "run", name)
    wait_for(
        lambda: (
            bookmark(name, client_id) is not None
            and any(r["status"] == "running" for r in runs(name))
        ),
        timeout=180,
        interval=0.1,
        what=what,
    )


def every_row(schema: str, table: str, rows: int) -> list[int]:
    """The ids in the warehouse's ``table`` once there are ``rows`` of them."""

    def complete() -> list[int]:
        got = warehouse_ids(schema, table)
        return got if len(got) == rows else []

    return wait_for(complete, timeout=180, interval=1, what="every source row in the warehouse")


def run_children() -> list[int]:
    """Processes of extractor runs (their command lines name the private run directory)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if b"skein-run-" in cmdline:
            found.append(int(entry.name))
    return found


class Extractor:
    """This module's extractor process (the stack's one is stopped meanwhile)."""

    def __init__(self) -> None:
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = open(ROOT / ".run" / "logs" / "extractor-e2e.log", "ab")  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-m", "services.extractor"],
            cwd=ROOT,
            env={**os.environ, **EXTRACTOR_ENV},
            stdout=log,
            stderr=log,
        )
        log.close()
        wait_for(self.healthy, timeout=60, what="the test extractor's /healthz")

    def healthy(self) -> bool:
        try:
            return httpx.get(METRICS.replace("metrics", "healthz"), timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)


@pytest.fixture(scope="module")
def extractor() -> Iterator[Extractor]:
    with scratch_database(SOURCE_DB):
        stack("stop", "extractor")
        ours = Extractor()
        try:
            ours.start()
            yield ours
        finally:
            ours.stop()
            with closing(db.connect()) as conn:
                for name in CREATED:
                    if integrations.get(conn, name) is not None:
                        integrations.remove(conn, name)
            stack("start", "extractor")


# --- tests -----------------------------------------------------------------------------------


def test_incremental_integration_copies_new_rows_on_each_scheduled_run(
    extractor: Extractor, tmp_path: Path
) -> None:
    source_table("orders_inc", 1000)
    name, client_id, schema = add_integration(tmp_path, "orders_inc", schedule="* * * * * */5")
    table = "public-orders_inc"
    wait_for(
        lambda: warehouse_ids(schema, table) == list(range(1, 1001)),
        timeout=180,
        interval=1,
        what="the first scheduled run's rows in the warehouse",
    )
    first = skein("integrations", "runs", name)["runs"][-1]  # newest first
    assert (first["trigger"], first["status"], first["records"]) == (
        "schedule",
        "succeeded",
        {table: 1000},
    )
    assert first["states_saved"] >= 1
    assert bookmark(name, client_id) == 1000

    fill("orders_inc", 1001, 1100)
    wait_for(
        lambda: warehouse_ids(schema, table) == list(range(1, 1101)),
        timeout=120,
        interval=1,
        what="the added rows after the next scheduled run",
    )
    wait_for(lambda: bookmark(name, client_id) == 1100, timeout=30, what="the new bookmark")
    paused = skein("integrations", "pause", name)
    assert paused["paused"] is True
    wait_for(
        lambda: all(r["status"] != "running" for r in runs(name)),
        timeout=60,
        what="the run in progress to end",
    )
    later = [r for r in runs(name)[1:] if r["status"] == "succeeded"]
    # Each later run starts at the saved bookmark: only the new rows are extracted, plus the
    # bookmark row itself (taps compare replication keys with >=, as Singer taps do).
    assert {r["records"][table] for r in later} <= {1, 101}
    assert [r["records"][table] for r in later].count(101) == 1

    scraped = httpx.get(METRICS, timeout=5).text
    labels = f'client_id="{client_id}",integration="{name}"'
    assert f'skein_extractor_runs_total{{{labels},status="succeeded"}}' in scraped
    assert f"skein_extractor_seconds_since_last_success{{{labels}}}" in scraped
    records = next(
        float(line.rsplit(" ", 1)[1])
        for line in scraped.splitlines()
        if line.startswith(f"skein_extractor_records_total{{{labels}}}")
    )
    assert records == 1000 + sum(r["records"][table] for r in later)
    assert f'skein_extractor_run_duration_seconds_count{{integration="{name}"' in scraped

    # The tap's config is stored encrypted and its password never shows in the run's stderr.
    with closing(db.connect()) as conn, conn.cursor() as cur:
        cur.execute("SELECT sealed FROM integrations WHERE name = %s", (name,))
        row = cur.fetchone()
    assert row is not None and SOURCE_PASSWORD.encode() not in bytes(row[0])
    assert all(SOURCE_PASSWORD not in (r["stderr"] or "") for r in runs(name, stderr=True))
    assert "Beginning sync" in (runs(name, stderr=True)[0]["stderr"] or "")

    removed = skein("integrations", "remove", name)
    assert removed["removed"] is True
    assert skein("integrations", "ls", str(client_id))["integrations"] == []
    with closing(db.connect()) as conn:
        issued = tokens.list_api_tokens(conn, client_id)
    assert len(issued) == 1 and issued[0]["revoked_at"] is not None  # its own token, revoked


def test_a_killed_extractor_resumes_from_the_saved_state(
    extractor: Extractor, tmp_path: Path
) -> None:
    rows = 40_000
    source_table("orders_kill", rows)
    name, client_id, schema = add_integration(tmp_path, "orders_kill")
    run_until_a_state_is_saved(name, client_id)
    extractor.kill()
    wait_for(lambda: not run_children(), timeout=20, what="the run's tap and target to die")
    saved = bookmark(name, client_id)
    assert saved is not None and saved < rows
    assert runs(name)[-1]["status"] == "running"  # as the killed extractor left it

    extractor.start()
    wait_for(
        lambda: runs(name)[-1]["status"] == "succeeded",
        timeout=180,
        interval=0.5,
        what="the retried run to succeed",
    )
    history = runs(name)
    killed, resumed = history[0], history[-1]
    assert killed["status"] == "failed" and "stopped" in killed["error"]
    assert resumed["trigger"] == "retry"
    # It started from the saved bookmark, not from scratch.
    assert resumed["records"] == {"public-orders_kill": rows - saved + 1}
    ids = every_row(schema, "public-orders_kill", rows)
    assert ids == list(range(1, rows + 1))  # every row exactly once
    skein("integrations", "remove", name)


def test_a_gate_outage_fails_the_run_keeps_the_state_and_the_retry_succeeds(
    extractor: Extractor, tmp_path: Path
) -> None:
    rows = 40_000
    source_table("orders_gate", rows)
    name, client_id, schema = add_integration(tmp_path, "orders_gate")
    run_until_a_state_is_saved(name, client_id)
    stack("stop", "gate")
    try:
        failed = wait_for(
            lambda: next((r for r in runs(name) if r["status"] == "failed"), None),
            timeout=120,
            interval=0.5,
            what="the run to fail while the gate is down",
        )
        assert "gate unavailable" in failed["error"], failed["error"]
        kept = bookmark(name, client_id)
        assert kept is not None and kept < rows
        assert integration(name, client_id)["consecutive_failures"] >= 1
    finally:
        stack("start", "gate")
    wait_for(
        lambda: runs(name)[-1]["status"] == "succeeded",
        timeout=180,
        interval=0.5,
        what="a retry to succeed once the gate is back",
    )
    retried = runs(name)[-1]
    assert retried["trigger"] == "retry"
    assert retried["records"] == {"public-orders_gate": rows - kept + 1}
    assert integration(name, client_id)["consecutive_failures"] == 0
    ids = every_row(schema, "public-orders_gate", rows)
    assert ids == list(range(1, rows + 1))
    skein("integrations", "remove", name)


def test_a_reset_re_extracts_everything_and_swaps_the_table_in_only_when_a_run_succeeds(
    extractor: Extractor, tmp_path: Path
) -> None:
    rows = 40_000
    source_table("orders_reset", rows)
    name, client_id, schema = add_integration(tmp_path, "orders_reset")
    table = "public-orders_reset"
    skein("integrations", "run", name)
    wait_for(
        lambda: warehouse_ids(schema, table) == list(range(1, rows + 1)),
        timeout=180,
        interval=1,
        what="the first run's rows in the warehouse",
    )
    wait_for(lambda: bookmark(name, client_id) == rows, timeout=30, what="the first bookmark")

    # The source loses rows an incremental run can never notice; a reset re-extracts it all.
    source(sql.SQL("DELETE FROM {} WHERE id <= 500").format(sql.Identifier("orders_reset")))
    assert skein("integrations", "reset", name) == {"name": name, "reset_streams": "all"}
    assert bookmark(name, client_id) is None

    # A reset run that fails (the gate goes away mid-run) leaves the old rows in place.
    run_until_a_state_is_saved(
        name, client_id, what="a state saved while the reset run is still going"
    )
    stack("stop", "gate")
    try:
        wait_for(
            lambda: runs(name)[-1]["status"] == "failed",
            timeout=120,
            interval=0.5,
            what="the reset run to fail while the gate is down",
        )
        time.sleep(3)  # whatever the run sent before failing is loaded meanwhile
        assert warehouse_ids(schema, table) == list(range(1, rows + 1))
    finally:
        stack("start", "gate")

    # The retry starts from scratch again (the reset is still pending), and its success swaps
    # the table in whole: exactly the source's rows.
    retried = wait_for(
        lambda: (r := runs(name)[-1])["status"] == "succeeded" and r,
        timeout=240,
        interval=0.5,
        what="a retry of the reset run to succeed",
    )
    assert retried["records"] == {table: rows - 500}
    wait_for(
        lambda: warehouse_ids(schema, table) == list(range(501, rows + 1)),
        timeout=180,
        interval=1,
        what="the re-extracted table swapped in",
    )
    assert integration(name, client_id)["reset_requested_at"] is None
    assert bookmark(name, client_id) == rows
    skein("integrations", "remove", name)
