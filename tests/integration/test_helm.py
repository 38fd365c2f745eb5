"""The Helm chart (deploy/helm/skein): it lints, renders, and agrees with docker-compose.yml and
the local stack on services, ports, settings and probes.

Helm is built from the Go module proxy once and cached outside the checkout
(deploy/local/helm.sh); the running local stack answers the probes the chart points at.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "skein"
LOADERS = ("postgres", "redshift", "bigquery", "snowflake", "iceberg")
# Values a test install gives: every loader on, and secrets strong enough for production.
SECRETS = {
    "controlDsn": "postgresql://skein:pw-for-tests-0123456789@control-db:5432/skein",
    "secretKey": "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",  # ID:base64 of 32 bytes
    "s3SecretKey": "s3-secret-for-tests-0123456789",
    "spoolToken": "spool-token-for-tests-0123456789",
    "kafkaAdminPassword": "admin-pw-for-tests-0123456789",
    "kafkaGatePassword": "gate-pw-for-tests-0123456789",
    "kafkaStreameryPassword": "streamery-pw-for-tests-0123456789",
}
# Each Deployment's settings class (what the service reads at start).
SETTINGS = {
    "gate": "services.gate.settings:GateSettings",
    "spool": "services.spool.settings:SpoolSettings",
    "control": "services.control.settings:ControlSettings",
    "streamery": "services.streamery.settings:StreamerySettings",
    "extractor": "services.extractor.settings:ExtractorSettings",
    "loader-postgres": "services.loaders.postgres.settings:PostgresLoaderSettings",
    "loader-redshift": "services.loaders.redshift.settings:RedshiftLoaderSettings",
    "loader-bigquery": "services.loaders.bigquery.settings:BigQueryLoaderSettings",
    "loader-snowflake": "services.loaders.snowflake.settings:SnowflakeLoaderSettings",
    "loader-iceberg": "services.loaders.iceberg.settings:IcebergLoaderSettings",
}


@cache
def helm_binary() -> str:
    done = subprocess.run(
        [str(ROOT / "deploy/local/helm.sh"), "path"],
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    assert done.returncode == 0, f"building Helm failed: {done.stderr[-3000:]}"
    return done.stdout.strip()


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [helm_binary(), *args], capture_output=True, text=True, timeout=120, check=False
    )


def value_flags(**extra: str) -> list[str]:
    flags = []
    for key, value in {**{f"secrets.{k}": v for k, v in SECRETS.items()}, **extra}.items():
        flags += ["--set-string", f"{key}={value}"]
    for loader in LOADERS:
        flags += ["--set", f"loaders.{loader}.enabled=true"]
    return flags


@cache
def rendered() -> list[dict[str, Any]]:
    done = helm("template", "skein", str(CHART), *value_flags())
    assert done.returncode == 0, done.stderr
    return [d for d in yaml.safe_load_all(done.stdout) if d]


def kinds(kind: str) -> dict[str, dict[str, Any]]:
    """Rendered objects of a kind by name (the release prefix "skein-" dropped)."""
    return {
        d["metadata"]["name"].removeprefix("skein-"): d for d in rendered() if d["kind"] == kind
    }


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    found: dict[str, Any] = containers[0]
    return found


def ports(deployment: dict[str, Any]) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for p in container(deployment)["ports"]}


def environment(name: str) -> dict[str, str]:
    """What a Deployment's process sees: the settings ConfigMap, its own env, the Secret's
    values for the keys it references."""
    settings = kinds("ConfigMap")["settings"]["data"]
    keys = {
        "control-dsn": "controlDsn",
        "secret-key": "secretKey",
        "s3-secret-key": "s3SecretKey",
        "spool-token": "spoolToken",
    } | {f"kafka-{u}-password": f"kafka{u.title()}Password" for u in ("admin", "gate", "streamery")}
    env = dict(settings)
    for item in container(kinds("Deployment")[name])["env"]:
        if "value" in item:
            env[item["name"]] = item["value"]
        else:
            env[item["name"]] = SECRETS[keys[item["valueFrom"]["secretKeyRef"]["key"]]]
    return env


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded["services"]


def stack_ports() -> dict[str, int]:
    """deploy/local/stack.sh's service ports (SERVICES and LOADER_PORTS), by chart name."""
    script = (ROOT / "deploy/local/stack.sh").read_text()
    found: dict[str, int] = {}
    for line in script.splitlines():
        if line.startswith("SERVICES=("):
            for spec in line.split("(", 1)[1].rstrip(")").split():
                name, port = spec.split(":")
                found[name] = int(port)
        if line.startswith("declare -A LOADER_PORTS=("):
            for spec in line.split("(", 1)[1].rstrip(")").split():
                loader, port = spec.strip("[").split("]=")
                found[f"loader-{loader}"] = int(port)
    return found


# --- tests ---------------------------------------------------------------------------------------


def test_the_chart_lints_and_refuses_missing_secrets_and_idle_streameries() -> None:
    done = helm("lint", "--strict", str(CHART), *value_flags())
    assert done.returncode == 0, done.stdout + done.stderr
    bare = helm("template", "skein", str(CHART))
    assert bare.returncode != 0 and "secrets.controlDsn" in bare.stderr
    idle = helm("template", "skein", str(CHART), *value_flags(), "--set", "streamery.replicas=13")
    assert idle.returncode != 0
    assert "streamery.replicas (13) must not exceed kafka.partitions (12)" in idle.stderr
    existing = helm("template", "skein", str(CHART), "--set", "secrets.existingSecret=mine")
    assert existing.returncode == 0, existing.stderr
    objects = [d for d in yaml.safe_load_all(existing.stdout) if d]
    assert not [d for d in objects if d["kind"] == "Secret"]  # theirs is used, none made


def test_every_workload_has_a_deployment_service_probes_and_a_disruption_budget() -> None:
    deployments = kinds("Deployment")
    assert sorted(deployments) == sorted(SETTINGS)
    services = kinds("Service")
    budgets = kinds("PodDisruptionBudget")
    for name, deployment in deployments.items():
        assert container(deployment)["args"] == [SETTINGS[name].split(":")[0].rsplit(".", 1)[0]]
        assert services[name]["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
        assert {p["name"] for p in services[name]["spec"]["ports"]} == set(ports(deployment))
        probes = container(deployment)
        assert probes["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert probes["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert probes["readinessProbe"]["httpGet"]["port"] in ports(deployment).values()
        if deployment["spec"].get("replicas", 2) > 1:
            assert budgets[name]["spec"]["selector"] == deployment["spec"]["selector"]
    # The gate scales on CPU (and so has no fixed replica count); the streamery is bounded.
    hpa = kinds("HorizontalPodAutoscaler")["gate"]["spec"]
    assert hpa["scaleTargetRef"]["name"] == "skein-gate"
    assert hpa["metrics"][0]["resource"]["name"] == "cpu"
    assert "replicas" not in deployments["gate"]["spec"]
    assert deployments["streamery"]["spec"]["replicas"] == 2


def test_loaders_are_switched_on_by_values() -> None:
    default = helm(
        "template", "skein", str(CHART),
        *[f for k, v in SECRETS.items() for f in ("--set-string", f"secrets.{k}={v}")],
    )  # fmt: skip
    names = {
        d["metadata"]["name"]
        for d in yaml.safe_load_all(default.stdout)
        if d and d["kind"] == "Deployment"
    }
    assert {n for n in names if "loader" in n} == {"skein-loader-postgres"}


def test_the_migration_runs_as_a_hook_before_install_and_upgrade() -> None:
    job = kinds("Job")["migrate"]
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    command = " ".join(job["spec"]["template"]["spec"]["containers"][0]["args"])
    # The same steps as docker-compose's migrate and kafka-init services.
    assert compose()["migrate"]["entrypoint"] == ["skein", "db", "migrate"]
    assert "skein db migrate" in command
    for step in ("skein kafka ensure-topic", "skein kafka ensure-acls"):
        assert step in command and step in " ".join(compose()["kafka-init"]["command"])
    env = {e["name"]: e for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["SKEIN_KAFKA_USERNAME"]["value"] == "admin"
    assert env["SKEIN_TOPIC_PARTITIONS"]["value"] == "12"


def test_alert_rules_come_from_the_one_rules_file() -> None:
    rules = yaml.safe_load((ROOT / "deploy/prometheus/rules/skein.yml").read_text())
    assert kinds("PrometheusRule")["skein"]["spec"]["groups"] == rules["groups"]
    monitor = kinds("ServiceMonitor")["skein"]["spec"]
    jobs = {e["relabelings"][1]["replacement"] for e in monitor["endpoints"]}
    # The job labels the rules and dashboards use: the compose stack's scrape targets.
    targets = json.loads((ROOT / "deploy/prometheus/compose-targets/skein.json").read_text())
    assert jobs == {t["labels"]["job"] for t in targets} - {"prometheus"}


def test_chart_compose_and_local_stack_agree_on_ports_and_settings() -> None:
    services = compose()
    local = stack_ports()
    for name, deployment in kinds("Deployment").items():
        chart = ports(deployment)
        # docker-compose publishes the same port, and the local stack runs the service on it.
        published = {int(p.split(":")[2]) for p in services[name].get("ports", [])}
        assert chart["http"] in published, (name, chart, published)
        assert local[name] == chart["http"], (name, local)
        # Every setting docker-compose gives the service, the chart gives too (their values
        # differ only in host names); secrets are given as the local stack gives them.
        theirs = {k for k in services[name]["environment"] if k.startswith("SKEIN_")}
        mine = set(environment(name))
        secrets = {"SKEIN_S3_SECRET_KEY", "SKEIN_SPOOL_TOKEN"}
        assert theirs - secrets <= mine, (name, sorted(theirs - secrets - mine))


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_each_service_accepts_the_charts_settings_in_production(name: str) -> None:
    """The service's own settings class reads exactly what the chart gives it: no unknown
    SKEIN_<SERVICE>_* name, no placeholder secret, and the ports the chart exposes."""
    module, cls = SETTINGS[name].split(":")
    program = (
        f"import json; from {module} import {cls} as S; s = S(); "
        "print(json.dumps({k: v for k, v in s.model_dump().items() if k.endswith('port')}"
        " | {'credentials': sorted(S.credentials)}))"
    )
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), "SKEIN_ENV_FILE": ""}
    done = subprocess.run(
        [sys.executable, "-c", program],
        cwd=ROOT,
        env={**env, **environment(name)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    read = json.loads(done.stdout)
    chart = ports(kinds("Deployment")[name])
    assert read.get("port", read.get("metrics_port")) == chart["http"]
    # It is given the credentials it uses (production requires them), and no others.
    given = {
        "kafka": "SKEIN_KAFKA_PASSWORD",
        "secret_key": "SKEIN_SECRET_KEY",
        "spool_token": "SKEIN_SPOOL_TOKEN",
        "s3_secret_key": "SKEIN_S3_SECRET_KEY",
    }
    assert read["credentials"] == sorted(k for k, v in given.items() if v in environment(name))
    if "metrics" in chart:
        assert read["metrics_port"] == chart["metrics"]


def test_the_local_stack_answers_the_probes_the_chart_points_at() -> None:
    for name, deployment in kinds("Deployment").items():
        if name.startswith("loader-") and name != "loader-postgres":
            continue  # the local stack runs the postgres loader only (SKEIN_LOADERS)
        probes = container(deployment)
        for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
            port = probes[probe]["httpGet"]["port"]
            answer = httpx.get(f"http://127.0.0.1:{port}{path}", timeout=5)
            assert answer.status_code == 200, (name, probe, port, answer.text)
