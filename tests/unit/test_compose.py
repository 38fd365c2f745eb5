"""docker-compose.yml describes the same topology as deploy/local/ (no Docker engine runs here)."""

from __future__ import annotations

import json
import re
from typing import Any

import yaml

from support.stack import ROOT


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


def test_records_topic_and_acls_created_as_the_admin_principal() -> None:
    init = compose()["services"]["kafka-init"]
    command = " ".join(init["command"])
    # The same CLI as deploy/local/stack.sh: RF 3 / min ISR 2 (common/kafka_admin.py), the ACLs.
    assert "skein kafka ensure-topic" in command
    assert "skein kafka ensure-acls" in command
    assert init["environment"]["SKEIN_KAFKA_USERNAME"] == "admin"
    assert "SKEIN_TOPIC_PARTITIONS:-12" in str(init["environment"])


def test_kafka_authenticates_every_listener_as_the_local_stack_does() -> None:
    services = compose()["services"]
    local = local_broker_properties()
    for node in (1, 2, 3):
        env = services[f"kafka-{node}"]["environment"]
        protocols = dict(
            p.split(":") for p in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(",")
        )
        assert set(protocols.values()) == {"SASL_PLAINTEXT"}
        assert env["KAFKA_SASL_MECHANISM_INTER_BROKER_PROTOCOL"] == "SCRAM-SHA-512"
        assert env["KAFKA_SASL_MECHANISM_CONTROLLER_PROTOCOL"] == "PLAIN"
        assert env["KAFKA_AUTHORIZER_CLASS_NAME"] == local["authorizer.class.name"]
        assert env["KAFKA_SUPER_USERS"] == local["super.users"]
        assert env["KAFKA_ALLOW_EVERYONE_IF_NO_ACL_FOUND"] == "false"
        # Formatted once, with the SCRAM users, before the node starts.
        depends = services[f"kafka-{node}"]["depends_on"]
        assert depends[f"kafka-{node}-format"]["condition"] == "service_completed_successfully"
        assert services[f"kafka-{node}-format"]["environment"]["NODE_ID"] == str(node)
    for name in ("gate", "streamery"):
        env = services[name]["environment"]
        assert env["SKEIN_KAFKA_USERNAME"] == name
        assert env["SKEIN_KAFKA_PASSWORD"].startswith(f"${{SKEIN_KAFKA_{name.upper()}_PASSWORD:?")


def test_databases_and_s3_use_generated_passwords() -> None:
    services = compose()["services"]
    text = (ROOT / "docker-compose.yml").read_text()
    assert "trust" not in text
    for db in ("control-db", "warehouse-db"):
        env = services[db]["environment"]
        assert env["POSTGRES_HOST_AUTH_METHOD"] == "scram-sha-256"
        assert env["POSTGRES_PASSWORD"].startswith("${SKEIN_PG_")
    spool = services["spool"]["environment"]
    assert spool["SKEIN_SPOOL_TOKEN"].startswith("${SKEIN_SPOOL_TOKEN:?")
    assert spool["SKEIN_S3_SECRET_KEY"].startswith("${SKEIN_S3_SECRET_KEY:?")
    assert "${SKEIN_PG_CONTROL_PASSWORD:?" in spool["SKEIN_CONTROL_DSN"]
    # Every secret comes from .env (deploy/docker/secrets.sh): none has a default.
    for name in re.findall(r"\$\{(SKEIN_\w+?(?:PASSWORD|SECRET_KEY|TOKEN))(\S{2})", text):
        assert name[1] == ":?", name


def test_postgres_and_s3_ports_agree_with_the_local_stack() -> None:
    services = compose()["services"]
    assert published(services["control-db"]) == [("127.0.0.1", 5432, 5432)]
    assert services["control-db"]["environment"]["POSTGRES_DB"] == "skein"
    assert published(services["warehouse-db"]) == [("127.0.0.1", 5433, 5432)]
    assert services["warehouse-db"]["environment"]["POSTGRES_DB"] == "warehouse"
    assert published(services["s3"]) == [("127.0.0.1", 8333, 8333)]
    assert "-bucket=skein" in " ".join(services["s3"]["command"])


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
        "control": "control",
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
    assert set(ports) == {"postgres", "redshift", "bigquery", "snowflake", "iceberg"}
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


def test_the_extractor_runs_taps_in_a_required_sandbox() -> None:
    extractor = compose()["services"]["extractor"]
    assert extractor["environment"]["SKEIN_EXTRACTOR_SANDBOX"] == "bwrap"  # fails closed
    assert extractor["user"] == "root"  # to switch to the image's skein-tap user
    dockerfile = (ROOT / "deploy/docker/Dockerfile").read_text()
    assert "bubblewrap" in dockerfile and "useradd" in dockerfile and "skein-tap" in dockerfile
