"""docker-compose.yml describes the same topology as deploy/local/ (no Docker engine runs here)."""

from __future__ import annotations

import json
import re
from typing import Any

import yaml

from tests.conftest import ROOT


def local_broker_properties() -> dict[str, str]:
    text = (ROOT / "deploy/local/kafka/server.properties.tmpl").read_text()
    pairs = (
        line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#")
    )
    return {k.strip(): v.strip() for k, v in pairs}


def voters(spec: str) -> list[tuple[int, int]]:
    """(node id, controller port) of each voter; the host differs (container name vs loopback)."""
    parsed = (re.fullmatch(r"(\d+)@[\w.-]+:(\d+)", v) for v in spec.split(","))
    return [(int(m[1]), int(m[2])) for m in parsed if m]


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


def published(service: dict[str, Any]) -> list[tuple[str, int, int]]:
    out = []
    for spec in service.get("ports", []):
        host, host_port, container_port = spec.split(":")
        out.append((host, int(host_port), int(container_port)))
    return out


def test_three_kraft_nodes_with_the_local_stack_durability_settings() -> None:
    services = compose()["services"]
    local = local_broker_properties()
    brokers = {name: svc for name, svc in services.items() if re.fullmatch(r"kafka-\d", name)}
    assert sorted(brokers) == ["kafka-1", "kafka-2", "kafka-3"]
    for name, svc in brokers.items():
        env = svc["environment"]
        node = int(env["KAFKA_NODE_ID"])
        assert name == f"kafka-{node}"
        assert env["KAFKA_PROCESS_ROLES"] == local["process.roles"]
        assert env["KAFKA_DEFAULT_REPLICATION_FACTOR"] == local["default.replication.factor"] == "3"
        assert env["KAFKA_MIN_INSYNC_REPLICAS"] == local["min.insync.replicas"] == "2"
        assert (
            env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == local["auto.create.topics.enable"] == "false"
        )
        assert env["KAFKA_MESSAGE_MAX_BYTES"] == local["message.max.bytes"]
        # Client port N9092 published on loopback; controller on N9093, as locally.
        assert published(svc) == [("127.0.0.1", node * 10000 + 9092, node * 10000 + 9092)]
        assert f"CONTROLLER://:{node}9093" in env["KAFKA_LISTENERS"]
        assert f"EXTERNAL://127.0.0.1:{node}9092" in env["KAFKA_ADVERTISED_LISTENERS"]
        assert voters(env["KAFKA_CONTROLLER_QUORUM_VOTERS"]) == voters(
            local["controller.quorum.voters"]
        )


def test_records_topic_created_with_rf3_and_min_isr2() -> None:
    command = " ".join(compose()["services"]["kafka-init"]["command"])
    assert "--replication-factor 3" in command
    assert "--config min.insync.replicas=2" in command
    assert "SKEIN_TOPIC_PARTITIONS:-12" in str(compose()["services"]["kafka-init"]["environment"])


def test_postgres_and_s3_ports_agree_with_the_local_stack() -> None:
    services = compose()["services"]
    assert published(services["control-db"]) == [("127.0.0.1", 5432, 5432)]
    assert services["control-db"]["environment"]["POSTGRES_DB"] == "skein"
    assert published(services["warehouse-db"]) == [("127.0.0.1", 5433, 5432)]
    assert services["warehouse-db"]["environment"]["POSTGRES_DB"] == "warehouse"
    assert published(services["s3"]) == [("127.0.0.1", 8333, 8333)]
    assert "-bucket=skein" in services["s3"]["command"]


def test_every_published_port_is_loopback_only() -> None:
    for name, svc in compose()["services"].items():
        for host, _, _ in published(svc):
            assert host == "127.0.0.1", name


def test_skein_services_publish_the_local_stack_ports() -> None:
    stack_sh = (ROOT / "deploy/local/stack.sh").read_text()
    declared = re.search(r"^SERVICES=\((.*)\)$", stack_sh, re.MULTILINE)
    assert declared is not None
    local = {name: int(port) for name, port in (s.split(":") for s in declared[1].split())}
    compose_names = {
        "spool": "spool",
        "gate": "gate",
        "streamery": "streamery",
        "loaders.postgres": "loader-postgres",
        "extractor": "extractor",
    }
    services = compose()["services"]
    for name, port in local.items():
        svc = services[compose_names[name]]
        assert published(svc) == [("127.0.0.1", port, port)], name
        assert svc["command"] == [f"services.{name}"]
    assert services["migrate"]["entrypoint"] == ["skein", "db", "migrate"]


def test_every_warehouse_loader_has_its_own_service_on_the_local_stack_port() -> None:
    stack_sh = (ROOT / "deploy/local/stack.sh").read_text()
    declared = re.search(r"^declare -A LOADER_PORTS=\((.*)\)$", stack_sh, re.MULTILINE)
    assert declared is not None
    ports = dict(re.findall(r"\[(\w+)\]=(\d+)", declared[1]))
    assert set(ports) == {"postgres", "redshift", "bigquery", "snowflake"}
    services = compose()["services"]
    for kind, port in ports.items():
        svc = services[f"loader-{kind}"]
        assert published(svc) == [("127.0.0.1", int(port), int(port))], kind
        assert svc["command"] == [f"services.loaders.{kind}"]
        assert svc["environment"][f"SKEIN_LOADER_{kind.upper()}_HOST"] == "0.0.0.0"


def test_prometheus_and_grafana_are_provisioned_from_deploy() -> None:
    services = compose()["services"]
    prom = services["prometheus"]
    assert published(prom) == [("127.0.0.1", 9090, 9090)]
    mounts = {v.split(":")[0]: v.split(":")[1] for v in prom["volumes"]}
    assert mounts["./deploy/prometheus/prometheus.yml"] == "/etc/prometheus/prometheus.yml"
    assert mounts["./deploy/prometheus/rules"] == "/etc/prometheus/rules"
    assert mounts["./deploy/prometheus/compose-targets"] == "/etc/prometheus/targets"
    # Every Skein service with a /metrics port in compose is a scrape target, under its name.
    targets = json.loads((ROOT / "deploy/prometheus/compose-targets/skein.json").read_text())
    scraped = {t for group in targets for t in group["targets"]}
    for name, svc in services.items():
        if svc.get("image") == "skein:local" and svc.get("ports"):
            env = svc.get("environment", {})
            internal = [v for k, v in env.items() if k.endswith("_METRICS_PORT")]
            port = internal[0] if internal else published(svc)[0][2]
            assert f"{name}:{port}" in scraped, name

    grafana = services["grafana"]
    mounts = {v.split(":")[0]: v.split(":")[1] for v in grafana["volumes"]}
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    provider = yaml.safe_load(
        (ROOT / "deploy/grafana/provisioning/dashboards/skein.yml").read_text()
    )
    assert provider["providers"][0]["options"]["path"] == mounts["./deploy/grafana/dashboards"]
    source = yaml.safe_load(
        (ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text()
    )["datasources"][0]
    assert source["url"] == "http://prometheus:9090"
    dashboard = json.loads((ROOT / "deploy/grafana/dashboards/skein.json").read_text())
    assert dashboard["panels"]
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == source["uid"], panel["title"]
        assert all(t["expr"] for t in panel["targets"]), panel["title"]
