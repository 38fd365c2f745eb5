"""Through the whole extractor: a client's hostile tap, a wheel built by the test, added with
`skein integrations add` and run on schedule beside another client's integration. Every attempt
it makes against the platform and the other run fails and its run's stderr shows it; the other
client's records reach its warehouse (docs/architecture.md, Security)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from psycopg2 import sql

from common import db
from services.extractor import integrations
from services.extractor.runs import list_runs
from support import hostile_tap
from support.processes import own_service
from support.stack import RUN_DIR, wait_for
from support.tenants import new_tenants

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

WAREHOUSE = {"host": "127.0.0.1", "port": "5433", "dbname": "warehouse", "user": "postgres"}
HEALTH = "http://127.0.0.1:19108/healthz"
SKEIN = str(Path(sys.executable).parent / "skein")
VICTIM_SECRET = f"victim-secret-{uuid.uuid4().hex}"
CANARY = f"extractor-canary-{uuid.uuid4().hex}"


@pytest.fixture(scope="module")
def extractor_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The settings this module's extractor and CLI share: the hostile wheel's directory, the
    sandbox required, a fast tick; the stack's extractor is stopped meanwhile."""
    env = {
        **hostile_tap.extractor_settings(tmp_path_factory.mktemp("hostile-tap")),
        "SKEIN_EXTRACTOR_METRICS_PORT": "19108",
        "SKEIN_EXTRACTOR_TICK_S": "0.5",
        "SKEIN_EXTRACTOR_FLUSH_INTERVAL_S": "1",
        "SKEIN_SANDBOX_CANARY": CANARY,  # in the extractor's environment: the tap hunts it
    }
    with own_service("extractor", env, HEALTH, replaces="extractor"):
        yield {**os.environ, **env}


def skein(env: dict[str, str], *args: str) -> dict[str, Any]:
    done = subprocess.run(
        [SKEIN, *args], capture_output=True, text=True, timeout=300, check=False, env=env
    )
    assert done.returncode == 0, f"skein {' '.join(args)}: {done.stdout} {done.stderr}"
    answer: dict[str, Any] = json.loads(done.stdout)
    return answer


def add(env: dict[str, str], tmp: Path, label: str, config: dict[str, Any]) -> tuple[str, str]:
    """A new client (its destination: a fresh schema of the demo warehouse) with one integration
    of the hostile tap; (integration name, schema)."""
    (client,) = new_tenants(1, prefix="e2e_sandbox")
    path = tmp / f"{label}.json"
    path.write_text(json.dumps(config))
    name = f"e2e-sandbox-{label}-{uuid.uuid4().hex[:6]}"
    tap = f"{hostile_tap.NAME}=={hostile_tap.VERSION}"
    skein(env, "integrations", "add", str(client.client_id), name, "--tap", tap,
          "--config", str(path), "--schedule", "0 0 1 1 *")  # fmt: skip
    return name, client.schema


def finished_runs(name: str) -> list[dict[str, Any]]:
    with closing(db.connect()) as conn:
        runs = list_runs(conn, name, 10, True)
    return [r for r in runs if r["status"] != "running"]


def warehouse_notes(schema: str) -> list[str]:
    try:
        with (
            closing(psycopg2.connect(connect_timeout=3, **WAREHOUSE)) as conn,
            conn.cursor() as cur,
        ):
            cur.execute(sql.SQL("SELECT note FROM {}").format(sql.Identifier(schema, "probe")))
            return [r[0] for r in cur.fetchall()]
    except (psycopg2.errors.UndefinedTable, psycopg2.OperationalError):
        return []


def test_a_hostile_tap_reaches_nothing_and_the_other_client_keeps_loading(
    extractor_env: dict[str, str], tmp_path: Path
) -> None:
    victim, victim_schema = add(
        extractor_env,
        tmp_path,
        "victim",
        {"mode": "victim", "sleep": 10, "password": VICTIM_SECRET},
    )
    secret_paths = [str(RUN_DIR / "skein.env"), *map(str, sorted((RUN_DIR / "secrets").iterdir()))]
    hostile, hostile_schema = add(
        extractor_env,
        tmp_path,
        "hostile",
        {"victim_secret": VICTIM_SECRET, "needles": [CANARY], "secret_paths": secret_paths},
    )
    skein(extractor_env, "integrations", "run", victim)
    skein(extractor_env, "integrations", "run", hostile)  # while the victim's run is going on
    wait_for(lambda: finished_runs(hostile), timeout=180, what="the hostile run to end")
    run = finished_runs(hostile)[0]
    stderr = run["stderr"] or ""
    print(stderr)
    hostile_tap.reported(stderr)
    assert VICTIM_SECRET not in stderr and CANARY not in stderr
    # Both clients' runs succeed and their records land, each in its own schema.
    wait_for(lambda: finished_runs(victim), timeout=180, what="the victim's run to end")
    assert finished_runs(victim)[0]["status"] == "succeeded", finished_runs(victim)[0]
    assert run["status"] == "succeeded", run
    wait_for(lambda: warehouse_notes(victim_schema) == ["victim"], timeout=120, what="its rows")
    wait_for(lambda: warehouse_notes(hostile_schema) == ["hostile"], timeout=120, what="its rows")
    with closing(db.connect()) as conn:
        for name in (victim, hostile):
            integrations.remove(conn, name)
