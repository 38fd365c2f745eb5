"""Security properties of the running stack: loopback-only listeners unless configured
otherwise, an internal API that refuses callers without its token, and a control database that
holds tokens only hashed and destination secrets only encrypted.

tests/integration/test_control_plane.py checks the stored rows one by one; here the whole
control database is dumped and searched, so a copy in any other table or column would show.
"""

from __future__ import annotations

import glob
import importlib
import inspect
import ipaddress
import os
import pkgutil
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx
import orjson
import psutil
import pytest

import services
from common import crypto, db, destination_config, tokens
from common.settings import SharedSettings
from services.control import accounts, destinations, webhooks
from services.spool import operations
from support.stack import ROOT, RUN_DIR, stack_secret, wait_for

SPOOL = "http://127.0.0.1:8081"
# Every listener the local stack must have; each must be on a loopback address.
EXPECTED_PORTS = {8080, 8081, 9102, 9103, 5432, 5433, 8333, 19092, 29092, 39092}


def stack_processes() -> Iterator[psutil.Process]:
    """The processes `make up` started (pid files), their children, and the Postgres servers."""
    pids = [int(p.read_text().split()[0]) for p in (ROOT / ".run" / "pids").glob("*.pid")]
    pids += [
        int(Path(f).read_text().split()[0])
        for f in glob.glob(str(ROOT / ".run" / "pg" / "*" / "postmaster.pid"))
    ]
    for pid in pids:
        try:
            process = psutil.Process(pid)
            yield process
            yield from process.children(recursive=True)
        except psutil.NoSuchProcess:
            continue


def listeners(process: psutil.Process) -> set[tuple[str, int]]:
    try:
        return {
            (c.laddr.ip, c.laddr.port)
            for c in process.net_connections(kind="inet")
            if c.status == psutil.CONN_LISTEN
        }
    except psutil.NoSuchProcess:
        return set()


def is_loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return address.is_loopback


def test_every_stack_process_listens_only_on_loopback() -> None:
    def every_expected_listener() -> dict[tuple[str, int], str]:
        found: dict[tuple[str, int], str] = {}
        for process in stack_processes():
            for address in listeners(process):
                found[address] = process.name()
        exposed = {a: name for a, name in found.items() if not is_loopback(a[0])}
        assert exposed == {}, f"listening beyond loopback: {exposed}"
        return found if {port for _, port in found} >= EXPECTED_PORTS else {}

    # A component another test restarted may take a moment to listen again.
    found = wait_for(every_expected_listener, timeout=60, interval=1, what="every listener")
    assert len(found) >= len(EXPECTED_PORTS)


def service_settings_classes() -> Iterator[type[SharedSettings]]:
    for module in pkgutil.walk_packages(services.__path__, "services."):
        if module.name.endswith(".settings"):
            loaded = importlib.import_module(module.name)
            for _, cls in inspect.getmembers(loaded, inspect.isclass):
                if issubclass(cls, SharedSettings) and cls.__module__ == module.name:
                    yield cls


def test_every_service_binds_to_loopback_by_default() -> None:
    hosts = {
        f"{cls.__module__}.{cls.__name__}.{name}": field.default
        for cls in service_settings_classes()
        for name, field in cls.model_fields.items()
        if name == "host" or name.endswith("_host")
    }
    # gate, spool, streamery, the loaders (and any service added later) each have one.
    assert len(hosts) >= 4, hosts
    assert set(hosts.values()) == {"127.0.0.1"}, hosts


def test_a_configured_host_moves_the_listener(tmp_path: Path) -> None:
    """SKEIN_SPOOL_HOST=127.0.0.2: the spool answers there and not on 127.0.0.1."""
    with socket.socket() as probe:  # a port free on both addresses
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {
        **os.environ,
        "SKEIN_SPOOL_HOST": "127.0.0.2",
        "SKEIN_SPOOL_PORT": str(port),
        "SKEIN_SPOOL_WORKERS": "1",
        "SKEIN_SPOOL_METRICS_DIR": str(tmp_path / "metrics"),
    }
    with open(tmp_path / "spool.log", "wb") as log:
        spool = subprocess.Popen(
            [sys.executable, "-m", "services.spool"], cwd=ROOT, env=env, stdout=log, stderr=log
        )
    try:

        def answers() -> bool:
            try:
                return httpx.get(f"http://127.0.0.2:{port}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(answers, timeout=60, what="the spool on 127.0.0.2")
        process = psutil.Process(spool.pid)
        bound = set().union(*(listeners(p) for p in [process, *process.children(recursive=True)]))
        assert bound == {("127.0.0.2", port)}
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
    finally:
        spool.terminate()
        spool.wait(30)


def spool_operations() -> list[tuple[str, str]]:
    spec = httpx.get(f"{SPOOL}/openapi.json", timeout=10).json()
    return [
        (method.upper(), path)
        for path, item in spec["paths"].items()
        if path.startswith("/v1/")
        for method in item
    ]


@pytest.mark.parametrize(
    "authorization",
    [None, "", "Bearer", "Bearer wrong", "Basic {token}", "{token}", "Bearer {token}x"],
)
def test_the_spool_refuses_every_internal_route_without_its_token(
    authorization: str | None,
) -> None:
    token = SharedSettings().spool_token.get_secret_value()
    operations = spool_operations()
    assert ("POST", "/v1/batches") in operations and ("POST", "/v1/leases") in operations
    headers = {} if authorization is None else {"Authorization": authorization.format(token=token)}
    answers = {}
    with httpx.Client(base_url=SPOOL, timeout=10) as client:
        for method, path in operations:
            url = path.replace("{", "").replace("}", "")  # any value for path parameters
            answers[f"{method} {path}"] = client.request(
                method, url, json={}, headers=headers
            ).status_code
    assert set(answers.values()) == {401}, answers


def test_the_spool_stores_nothing_for_an_unauthenticated_caller() -> None:
    with closing(db.connect()) as conn:
        client_id = int(accounts.create_client(conn, "spool-auth")["client_id"])
    registration = {
        "object_key": f"{client_id}/t/0/{0:020d}-{9:020d}.jsonl.gz",
        "client_id": client_id,
        "table_name": "t",
        "partition": 0,
        "first_offset": 0,
        "last_offset": 9,
        "record_count": 10,
        "bytes": 100,
        "oldest_received_at": "2026-11-26T10:00:00Z",
        "newest_received_at": "2026-11-26T10:00:01Z",
        "request_ids": [],
    }
    for headers in ({}, {"Authorization": "Bearer not-the-token"}):
        r = httpx.post(f"{SPOOL}/v1/batches", json=registration, headers=headers, timeout=10)
        assert r.status_code == 401
    with closing(db.connect()) as conn:
        assert operations.list_batches(conn, client_id=client_id) == []
    token = SharedSettings().spool_token.get_secret_value()
    r = httpx.get(f"{SPOOL}/v1/stats", headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert r.status_code == 200  # the right token is accepted: the 401s are about the token


def dump_control_database() -> bytes:
    (pg_dump,) = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_dump"))[-1:] or ["pg_dump"]
    dsn = SharedSettings().control_dsn.get_secret_value()
    done = subprocess.run([pg_dump, "--dbname", dsn], capture_output=True, timeout=300, check=True)
    return done.stdout


def test_the_control_database_holds_tokens_only_hashed_and_secrets_only_encrypted() -> None:
    settings = SharedSettings()
    key = settings.secret_key.get_secret_value()
    password = f"pw-{uuid.uuid4().hex}"
    credentials = orjson.dumps({"private_key": f"-----BEGIN {uuid.uuid4().hex}"}).decode()
    with closing(db.connect()) as conn:
        client_id = int(accounts.create_client(conn, "at-rest")["client_id"])
        token = tokens.create_api_token(conn, client_id)["token"]
        hook = webhooks.create_webhook(conn, client_id)["token"]
        destinations.set_destination(
            conn,
            key,
            client_id,
            "bigquery",
            {"project": "p", "schema": "s"},
            {"password": password, "credentials_json": credentials},
        )
        with conn, conn.cursor() as cur:
            cur.execute("SELECT secrets FROM destinations WHERE client_id = %s", (client_id,))
            row = cur.fetchone()
    assert row is not None
    stored = bytes(row[0])

    dump = dump_control_database()
    assert len(dump) > 1000
    for what, plain in {
        "API token": token,
        "webhook token": hook,
        "password": password,
        "credentials": credentials,
        "private key": credentials[16:50],
    }.items():
        assert plain.encode() not in dump, f"the {what} is stored in plain text"
    # What is stored instead: the tokens' SHA-256 and the AES-GCM ciphertext of the secrets.
    for plain in (token, hook):
        assert tokens.hash_token(plain).hex().encode() in dump
    bound = {"purpose": "destination", "client_id": client_id}
    assert orjson.loads(crypto.decrypt(key, stored, **bound)) == {
        "password": password,
        "credentials_json": credentials,
    }
    with pytest.raises(crypto.SecretKeyError):
        crypto.decrypt("another key", stored, **bound)
    # Bound to its client: copied into another client's row, it does not open.
    with pytest.raises(crypto.SecretKeyError, match="another client"):
        crypto.decrypt(key, stored, purpose="destination", client_id=client_id + 1)
    revealed: dict[str, Any] | None
    with closing(db.connect()) as conn:
        revealed = destination_config.get_destination(conn, key, client_id)
    assert revealed is not None and password not in orjson.dumps(revealed).decode()


# --- every internal door asks for the stack's generated secrets (docs/architecture.md, Security)


@pytest.mark.parametrize(("port", "dbname"), [(5432, "skein"), (5433, "warehouse")])
def test_postgres_refuses_a_connection_without_the_password(port: int, dbname: str) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    for password in (None, "postgres", "wrong"):
        command = ["psql", "-w", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres"]
        command += ["-d", dbname, "-tAc", "SELECT 1"]
        env = clean | ({"PGPASSWORD": password} if password else {})
        done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
        assert done.returncode != 0, (port, password)
        assert "password" in done.stderr, done.stderr
    # The generated one opens it (and it is SCRAM, not md5 or trust).
    right = clean | {"PGPASSWORD": stack_secret(f"pg-{'control' if port == 5432 else 'warehouse'}")}
    done = subprocess.run(
        ["psql", "-w", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-d", dbname, "-tAc",
         "SELECT rolpassword LIKE 'SCRAM-SHA-256$%' FROM pg_authid WHERE rolname = 'postgres'"],
        capture_output=True, text=True, env=right, check=False,
    )  # fmt: skip
    assert (done.returncode, done.stdout.strip()) == (0, "t"), done.stderr


def test_s3_refuses_the_old_fixed_secret_and_accepts_the_generated_one() -> None:
    import boto3
    from botocore.config import Config
    from botocore.exceptions import ClientError

    def s3(secret: str) -> Any:
        return boto3.client(
            "s3",
            endpoint_url="http://127.0.0.1:8333",
            region_name="us-east-1",
            aws_access_key_id="skein",
            aws_secret_access_key=secret,
            config=Config(retries={"max_attempts": 1}),
        )

    with pytest.raises(ClientError):
        s3("skein-local-secret").list_objects_v2(Bucket="skein", MaxKeys=1)
    assert s3(stack_secret("s3")).list_objects_v2(Bucket="skein", MaxKeys=1)["ResponseMetadata"]


def test_the_spool_refuses_the_built_in_placeholder_token() -> None:
    from common.settings import LOCAL_SPOOL_TOKEN

    r = httpx.get(f"{SPOOL}/v1/batches", headers={"Authorization": f"Bearer {LOCAL_SPOOL_TOKEN}"})
    assert r.status_code == 401, r.text
    ok = httpx.get(
        f"{SPOOL}/v1/batches", headers={"Authorization": f"Bearer {stack_secret('spool-token')}"}
    )
    assert ok.status_code == 200, ok.text


def test_generated_secrets_are_readable_by_their_owner_only() -> None:
    secrets = RUN_DIR / "secrets"
    assert secrets.stat().st_mode & 0o777 == 0o700
    names = {p.name for p in secrets.iterdir()}
    assert {"kafka-admin", "kafka-gate", "pg-control", "pg-warehouse", "s3", "spool-token"} <= names
    for path in [*secrets.iterdir(), RUN_DIR / "skein.env"]:
        assert path.stat().st_mode & 0o077 == 0, path
    for n in (1, 2, 3):  # the brokers' configuration holds their passwords
        assert (RUN_DIR / "kafka" / str(n) / "server.properties").stat().st_mode & 0o077 == 0
