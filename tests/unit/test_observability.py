"""Operators' view, pure parts: the per-client label bound, the streamery's oldest-record gauge,
``skein status``'s verdict and the rules' and dashboard's wiring (no servers)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import yaml
from prometheus_client import CollectorRegistry, generate_latest

from common.metrics import OTHER_CLIENTS, client_label, stalest_clients
from services.spool.status import TableStatus, assess
from services.streamery.metrics import OldestUnloaded
from support.stack import ROOT


def test_scrape_time_client_gauges_name_the_stalest_clients_and_fold_the_rest() -> None:
    ages = {7: 5.0, 8: 900.0, 9: 30.0, 10: 1.0}
    assert stalest_clients(ages, limit=2) == {
        7: OTHER_CLIENTS,
        8: "8",
        9: "9",
        10: OTHER_CLIENTS,
    }
    # Recomputed each scrape: a client that becomes stale is named, however late it came.
    ages[10] = 5000.0
    assert stalest_clients(ages, limit=2)[10] == "10"
    assert client_label(123456) == "123456"


def test_streamery_reports_each_clients_oldest_record_age_at_scrape_time() -> None:
    gauge = OldestUnloaded()
    registry = CollectorRegistry()
    registry.register(gauge)
    old = (datetime.now(UTC) - timedelta(seconds=30)).isoformat().replace("+00:00", "Z")
    gauge.update({5: old})
    text = generate_latest(registry).decode()
    line = next(x for x in text.splitlines() if x.startswith("skein_streamery_oldest_unloaded"))
    assert line.startswith('skein_streamery_oldest_unloaded_age_seconds{client_id="5"}')
    assert 29.0 < float(line.split()[-1]) < 60.0
    gauge.update({})  # nothing held any more: the client's series goes away
    assert 'client_id="5"' not in generate_latest(registry).decode()


def _table(**changes: object) -> TableStatus:
    base: dict[str, object] = {
        "client_id": 1,
        "table_name": "orders",
        "destination_type": "postgres",
        "last_loaded_at": "2026-11-26T18:00:00+00:00",
        "last_load_freshness_s": 6.0,
        "oldest_unloaded_age_s": None,
        "pending": 0,
        "dead": 0,
        "last_error": None,
    }
    return TableStatus(**{**base, **changes})  # type: ignore[arg-type]


def test_status_names_stale_and_dead_tables() -> None:
    assert assess(_table(), 60).problems == ()
    assert assess(_table(oldest_unloaded_age_s=59.0, pending=2), 60).problems == ()
    stale = assess(_table(oldest_unloaded_age_s=61.0, pending=2), 60)
    assert stale.as_dict()["healthy"] is False
    assert stale.problems[0].startswith("stale")
    dead = assess(_table(dead=1, oldest_unloaded_age_s=5.0), 60)
    assert "dead" in dead.problems[0]


def test_alerts_cover_the_listed_conditions_and_the_dashboard_uses_recorded_freshness() -> None:
    rules = yaml.safe_load((ROOT / "deploy/prometheus/rules/skein.yml").read_text())
    alerts = {r["alert"]: r for g in rules["groups"] for r in g["rules"] if "alert" in r}
    needed = {
        "SkeinGate5xxRate": "skein_gate_requests_total",
        "SkeinGate503Rate": 'status="503"',
        "SkeinKafkaUnderReplicatedPartitions": "underreplicatedpartitions",
        "SkeinKafkaOfflinePartitions": "offlinepartitionscount",
        "SkeinConsumerLagGrowing": "skein_streamery_lag_records",
        "SkeinSpoolOldestPending": "skein_spool_oldest_pending_age_seconds",
        "SkeinDeadBatches": 'state="dead"',
        "SkeinLoaderFailing": "skein_loader_loads_total",
        "SkeinFreshnessOverObjective": "client:skein_oldest_unloaded_age_seconds:max",
        "SkeinSchemaChanged": "skein_loader_schema_changes_total",
        "SkeinRecordsRejected": "skein_loader_rejected_records_total",
    }
    for name, metric in needed.items():
        assert metric in alerts[name]["expr"], name
        assert alerts[name]["for"], name
    dashboard = json.loads((ROOT / "deploy/grafana/dashboards/skein.json").read_text())
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    for metric in (
        "skein_gate_records_accepted_total",
        "skein_streamery_lag_records",
        "skein_spool_batches",
        "skein_loader_rows_total",
        "client:skein_oldest_unloaded_age_seconds:max",
        "skein_loader_freshness_seconds_bucket",
    ):
        assert metric in exprs, metric
