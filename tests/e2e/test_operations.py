"""The operators' view against a real Prometheus with real traffic: every scrape target is up,
the rules pass promtool, every dashboard panel's query returns data, and stopping the demo
warehouse fires the freshness and loader-failure alerts (short `for` windows in a test
configuration) and `skein status` reports the stale table; restarting it resolves both."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from common import db
from support.stack import ROOT, free_port, stack, wait_for
from support.tenants import Tenant, new_tenant
from support.warehouse import DEMO_WAREHOUSE

pytestmark = pytest.mark.e2e

GATE = "http://127.0.0.1:8080"
PROMETHEUS = "http://127.0.0.1:9090"
RUN_DIR = Path(os.environ.get("SKEIN_RUN_DIR", ROOT / ".run"))
RULES = ROOT / "deploy" / "prometheus" / "rules" / "skein.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "skein.json"
TABLE = "ops_events"
# The test configuration: alerts' `for` windows and the freshness objective, shortened.
TEST_FOR = "4s"
TEST_OBJECTIVE_S = 15
LOADER_TYPES = ("postgres", "redshift", "bigquery", "snowflake", "iceberg")


# --- helpers -------------------------------------------------------------------------------


def query(base: str, expr: str) -> list[dict[str, Any]]:
    r = httpx.get(f"{base}/api/v1/query", params={"query": expr}, timeout=10)
    body = r.json()
    assert r.status_code == 200 and body["status"] == "success", (expr, body)
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def alerts(base: str, client_id: int) -> dict[str, str]:
    """alert name -> state (pending | firing) of this client's alerts that call for action
    (not the informational ones: its first load creating a table is SkeinSchemaChanged)."""
    found = httpx.get(f"{base}/api/v1/alerts", timeout=10).json()["data"]["alerts"]
    return {
        a["labels"]["alertname"]: a["state"]
        for a in found
        if a["labels"].get("client_id") == str(client_id) and a["labels"].get("severity") != "info"
    }


def skein_status(client_id: int, objective: float) -> tuple[int, dict[str, Any]]:
    done = subprocess.run(
        [
            ROOT / ".venv/bin/skein",
            "status",
            "--client",
            str(client_id),
            "--objective",
            str(objective),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return done.returncode, json.loads(done.stdout)


def pid_alive(name: str) -> bool:
    path = RUN_DIR / "pids" / f"{name}.pid"
    try:
        os.kill(int(path.read_text()), 0)
    except (OSError, ValueError):
        return False
    return True


def panel_queries(client_id: int) -> list[tuple[str, str]]:
    """(panel title, PromQL) of every dashboard panel, the client variable set to this test's
    own tenant (so its data, not other tests' leftovers, must answer the per-client panels)."""
    dashboard = json.loads(DASHBOARD.read_text())
    return [
        (panel["title"], target["expr"].replace("$client_id", str(client_id)))
        for panel in dashboard["panels"]
        for target in panel["targets"]
    ]


# --- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tenant() -> Tenant:
    """A client whose destination is the demo warehouse (a schema of its own)."""
    return new_tenant("ops", DEMO_WAREHOUSE)


@pytest.fixture(scope="module")
def traffic(tenant: Tenant) -> Iterator[dict[str, int]]:
    """Records into the gate every half second for the whole module (real traffic)."""
    stop = threading.Event()
    counts = {"accepted": 0, "refused": 0}

    def run() -> None:
        seq = 0
        with httpx.Client(base_url=GATE, timeout=15) as http:
            while not stop.is_set():
                body = {
                    "table_name": TABLE,
                    "key_names": ["id"],
                    "schema": {"properties": {"id": {"type": "integer"}}},
                    "messages": [
                        {"action": "upsert", "sequence": seq + i, "data": {"id": seq + i}}
                        for i in range(20)
                    ],
                }
                try:
                    r = http.post(
                        "/v2/import/batch",
                        json=body,
                        headers={"Authorization": f"Bearer {tenant.token}"},
                    )
                    accepted = r.status_code == 202
                except httpx.HTTPError:
                    accepted = False
                counts["accepted" if accepted else "refused"] += 1
                seq += 20
                stop.wait(0.5)

    thread = threading.Thread(target=run, name="ops-traffic", daemon=True)
    thread.start()
    yield counts
    stop.set()
    thread.join(20)


@pytest.fixture(scope="module")
def test_prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A second Prometheus scraping the same targets as the stack's, with the real rules but
    short `for` windows and a 15 s freshness objective, so alerts fire within seconds."""
    home = tmp_path_factory.mktemp("prometheus")
    rules = yaml.safe_load(RULES.read_text())
    rewritten = 0
    for group in rules["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = TEST_FOR
            if rule.get("alert") == "SkeinFreshnessOverObjective":
                assert rule["expr"].endswith("> 60"), rule["expr"]
                rule["expr"] = rule["expr"][: -len("60")] + str(TEST_OBJECTIVE_S)
                rewritten += 1
            if rule.get("alert") == "SkeinLoaderFailing":  # its retry_wait look-back, scaled too
                assert "[30s]" in rule["expr"], rule["expr"]
                rule["expr"] = rule["expr"].replace("[30s]", "[6s]")
                rewritten += 1
    assert rewritten == 2
    (home / "rules.yml").write_text(yaml.safe_dump(rules))
    config = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    config["global"].update(scrape_interval="2s", scrape_timeout="2s", evaluation_interval="2s")
    config["rule_files"] = [str(home / "rules.yml")]
    for job in config["scrape_configs"]:
        job["file_sd_configs"] = [{"files": [str(RUN_DIR / "prometheus/targets/*.json")]}]
    (home / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    with open(home / "prometheus.log", "wb") as logfile:
        process = subprocess.Popen(
            [
                shutil.which("prometheus") or "prometheus",
                f"--config.file={home / 'prometheus.yml'}",
                f"--storage.tsdb.path={home / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=logfile,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            return httpx.get(f"{base}/-/ready", timeout=2).status_code == 200
        except httpx.HTTPError:
            return process.poll() is not None  # exited: fail below with its log

    wait_for(ready, timeout=60, what="the test Prometheus to be ready")
    assert process.poll() is None, (home / "prometheus.log").read_text()
    yield base
    process.terminate()
    process.wait(30)


# --- tests ---------------------------------------------------------------------------------


def test_rules_and_configuration_pass_promtool(tmp_path: Path) -> None:
    checked = subprocess.run(
        ["promtool", "check", "rules", str(RULES)], capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS" in checked.stdout
    shutil.copytree(ROOT / "deploy/prometheus", tmp_path / "prometheus")
    (tmp_path / "prometheus/targets").mkdir()
    checked = subprocess.run(
        ["promtool", "check", "config", str(tmp_path / "prometheus/prometheus.yml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_every_service_the_stack_runs_is_a_target_and_up() -> None:
    expected = {"gate", "spool", "control", "streamery", "kafka", "prometheus"}
    expected |= {f"loader-{t}" for t in LOADER_TYPES if pid_alive(f"loaders.{t}")}
    if pid_alive("extractor"):
        expected.add("extractor")

    def all_up() -> dict[str, list[str]] | None:
        targets = httpx.get(f"{PROMETHEUS}/api/v1/targets", timeout=10).json()["data"]
        by_job: dict[str, list[str]] = {}
        for t in targets["activeTargets"]:
            by_job.setdefault(t["labels"]["job"], []).append(t["health"])
        ok = set(by_job) == expected and all(h == ["up"] * len(h) for h in by_job.values())
        return by_job if ok else None

    by_job = wait_for(all_up, timeout=60, interval=1, what=f"targets {sorted(expected)} all up")
    assert by_job is not None and len(by_job["kafka"]) == 3
    # A loader the stack does not run is no target.
    for kind in LOADER_TYPES:
        assert (f"loader-{kind}" in by_job) == pid_alive(f"loaders.{kind}")


def test_warehouse_outage_fires_alerts_and_status_then_resolves(
    tenant: Tenant, traffic: dict[str, int], test_prometheus: str
) -> None:
    client_id = tenant.client_id
    panels = panel_queries(client_id)
    answered: dict[str, bool] = {expr: False for _, expr in panels}

    def run_panels() -> None:
        for _, expr in panels:  # each must evaluate; over the test, each must return data
            if query(PROMETHEUS, expr):
                answered[expr] = True

    # Healthy first: the table loads, status is clean, none of this client's alerts fire.
    def loaded() -> bool:
        code, out = skein_status(client_id, TEST_OBJECTIVE_S)
        return code == 0 and any(t["last_loaded_at"] for t in out["tables"])

    wait_for(loaded, timeout=90, interval=1, what="the client's table to load")
    wait_for(
        lambda: query(test_prometheus, f'skein_loader_rows_total{{client_id="{client_id}"}}'),
        timeout=30,
        interval=1,
        what="the load to show in the test Prometheus",
    )
    assert alerts(test_prometheus, client_id) == {}
    run_panels()

    stopped = time.monotonic()
    stack("pg-stop", "warehouse")
    try:
        firing = wait_for(
            lambda: (
                a
                if (a := alerts(test_prometheus, client_id)).get("SkeinFreshnessOverObjective")
                == "firing"
                and a.get("SkeinLoaderFailing") == "firing"
                else None
            ),
            timeout=120,
            interval=1,
            what="freshness and loader-failure alerts to fire",
        )
        fired_after = time.monotonic() - stopped
        code, out = skein_status(client_id, TEST_OBJECTIVE_S)
        assert code == 1, out
        stale = [u for u in out["unhealthy"] if u["table_name"] == TABLE]
        assert stale and stale[0]["problems"][0].startswith("stale"), out
        assert firing is not None and firing["SkeinLoaderFailing"] == "firing"
        run_panels()
    finally:
        stack("pg-start", "warehouse")
    started = time.monotonic()

    def resolved() -> bool:
        current = alerts(test_prometheus, client_id)
        return not {"SkeinFreshnessOverObjective", "SkeinLoaderFailing"} & set(current)

    wait_for(resolved, timeout=180, interval=1, what="both alerts to resolve")
    resolved_after = time.monotonic() - started
    wait_for(
        lambda: skein_status(client_id, TEST_OBJECTIVE_S)[0] == 0,
        timeout=60,
        interval=1,
        what="skein status to be healthy again",
    )
    run_panels()
    print(f"alerts fired {fired_after:.0f}s after the stop, resolved {resolved_after:.0f}s after")
    assert traffic["accepted"] > 0
    assert all(answered.values()), [t for t, e in panels if not answered[e]]


def log_lines(name: str, offset: int) -> list[dict[str, Any]]:
    """The JSON log lines a service wrote to .run/logs/<name>.log past ``offset``."""
    with open(RUN_DIR / "logs" / f"{name}.log", "rb") as f:
        f.seek(offset)
        found = []
        for line in f.read().splitlines():
            try:
                found.append(json.loads(line))
            except ValueError:
                continue  # not one of ours (a library printing plain text)
        return found


def test_a_request_id_follows_the_records_from_the_gate_to_the_warehouse(
    tenant: Tenant,
) -> None:
    logs = ("gate", "streamery", "loaders.postgres")
    offsets = {name: (RUN_DIR / "logs" / f"{name}.log").stat().st_size for name in logs}
    request_id = f"trace-{uuid.uuid4().hex}"
    body = {
        "table_name": "ops_traced",
        "key_names": ["id"],
        "schema": {"properties": {"id": {"type": "integer"}}},
        "messages": [{"action": "upsert", "sequence": 1, "data": {"id": 1}}],
    }
    r = httpx.post(
        f"{GATE}/v2/import/batch",
        json=body,
        headers={"Authorization": f"Bearer {tenant.token}", "X-Request-Id": request_id},
        timeout=30,
    )
    assert r.status_code == 202 and r.headers["x-request-id"] == request_id

    def logged(name: str, msg: str) -> dict[str, Any] | None:
        for entry in log_lines(name, offsets[name]):
            ids = entry.get("request_ids", [entry.get("request_id")])
            if entry.get("msg") == msg and request_id in ids:
                return entry
        return None

    access = wait_for(lambda: logged("gate", "request"), timeout=30, what="the gate's log line")
    assert access is not None
    assert access["status"] == 202 and access["route"] == "/v2/import/batch"
    registered = wait_for(
        lambda: logged("streamery", "batch registered"), timeout=60, what="the batch registered"
    )
    assert registered is not None
    assert registered["client_id"] == tenant.client_id
    loaded = wait_for(
        lambda: logged("loaders.postgres", "loaded"), timeout=60, what="the batch loaded"
    )
    assert loaded is not None
    assert registered["batch_id"] in loaded["batch_ids"]
    assert loaded["client_id"] == tenant.client_id and loaded["table"] == "ops_traced"
    # The spool keeps the request ids with the batch, for `skein spool ls`.
    with closing(db.connect()) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT request_ids FROM batches WHERE batch_id = %s", (registered["batch_id"],)
        )
        row = cur.fetchone()
    assert row is not None and request_id in row[0]
