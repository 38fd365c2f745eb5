"""What the bad-input, tenant and security suites share: tenants made through the control plane,
a watch on the records topic, and the client's warehouse rows."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from contextlib import closing
from dataclasses import dataclass
from typing import Any

import psycopg2
from confluent_kafka import Consumer, KafkaException, TopicPartition
from psycopg2 import sql

from common import control, db
from common.settings import SharedSettings
from services.control import accounts, destinations
from tests.conftest import demo_warehouse_secrets

GATE = "http://127.0.0.1:8080"
GATE_METRICS = "http://127.0.0.1:9101/metrics"  # internal port, not the public one
WAREHOUSE: dict[str, Any] = {
    "host": "127.0.0.1",
    "port": "5433",
    "dbname": "warehouse",
    "user": "postgres",
}


@dataclass(frozen=True)
class Tenant:
    client_id: int
    token: str
    schema: str | None = None  # its destination's schema in the demo warehouse, if it has one

    def headers(self, **extra: str) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {self.token}",
            "Content-Type": "application/json",
            **extra,
        }


def warehouse_role(password: str) -> str:
    """A new login role of the demo warehouse with ``password`` (it may create schemas)."""
    role = f"t_{uuid.uuid4().hex[:12]}"
    with (
        closing(psycopg2.connect(connect_timeout=5, **WAREHOUSE)) as conn,
        conn,
        conn.cursor() as cur,
    ):
        cur.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD %s").format(sql.Identifier(role)), (password,)
        )
        cur.execute(
            sql.SQL("GRANT CREATE ON DATABASE warehouse TO {}").format(sql.Identifier(role))
        )
    return role


def new_tenant(
    name: str, *, destination: bool = False, password: str | None = None, schema: str = ""
) -> Tenant:
    """A client with an API token; with ``destination``, its own schema in the demo warehouse
    (as a new role with ``password``, stored as its encrypted secret, when one is given)."""
    with closing(db.connect()) as conn:
        client = accounts.create_client(conn, f"{name}-{uuid.uuid4().hex[:6]}")
        token = control.create_api_token(conn, client["client_id"])
        if destination:
            schema = schema or f"{name}_{uuid.uuid4().hex[:8]}"
            destinations.set_destination(
                conn,
                SharedSettings().secret_key.get_secret_value(),
                client["client_id"],
                "postgres",
                {
                    "dsn_params": {**WAREHOUSE, "user": warehouse_role(password)}
                    if password
                    else WAREHOUSE,
                    "schema": schema,
                },
                {"password": password} if password else demo_warehouse_secrets(),
            )
    return Tenant(client["client_id"], token["token"], schema if destination else None)


def push_record(client_id: int, table: str, sequence: int, data: dict[str, Any]) -> dict[str, Any]:
    return {
        "client_id": client_id,
        "table_name": table,
        "sequence": sequence,
        "action": "upsert",
        "key_names": [],
        "data": data,
    }


@dataclass(frozen=True)
class Appended:
    """One message appended to the records topic: its key and the gate's request id."""

    key: bytes
    request_id: str


class TopicWatch:
    """Everything appended to the records topic between ``__init__`` and ``appended()``."""

    def __init__(self, settings: SharedSettings | None = None) -> None:
        self.settings = settings or SharedSettings()
        self.consumer = Consumer(
            {
                **self.settings.kafka_config(),
                "group.id": f"test-watch-{uuid.uuid4()}",
                "enable.auto.commit": False,
                "enable.partition.eof": True,
            }
        )
        self.start = self._ends()

    def _ends(self, timeout: float = 90) -> dict[int, int]:
        """Each partition's end offset; retried while a broker restarts (leaders move)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                topic = self.consumer.list_topics(self.settings.topic, timeout=10).topics[
                    self.settings.topic
                ]
                return {
                    p: self.consumer.get_watermark_offsets(
                        TopicPartition(self.settings.topic, p), timeout=10
                    )[1]
                    for p in topic.partitions
                }
            except KafkaException:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)

    def appended(self, timeout: float = 120) -> list[Appended]:
        """Every message appended since the watch began, up to the end offsets right now."""
        ends = self._ends()
        todo = {p for p, end in ends.items() if end > self.start[p]}
        self.consumer.assign(
            [TopicPartition(self.settings.topic, p, self.start[p]) for p in sorted(todo)]
        )
        found: list[Appended] = []
        deadline = time.monotonic() + timeout
        while todo:
            assert time.monotonic() < deadline, f"could not read partitions {todo} to their end"
            msg = self.consumer.poll(0.5)
            if msg is None:
                continue
            partition = msg.partition()
            assert partition is not None
            offset = msg.offset()
            assert offset is not None
            if msg.error():  # partition EOF: its offset is the next one to be written
                if offset >= ends[partition]:
                    todo.discard(partition)
                continue
            if offset < ends[partition]:
                headers = dict(msg.headers() or [])
                request_id = headers.get("request_id") or b""
                if isinstance(request_id, bytes):
                    request_id = request_id.decode()
                found.append(Appended(msg.key() or b"", request_id))
            if offset >= ends[partition] - 1:
                todo.discard(partition)
        return found

    def close(self) -> None:
        self.consumer.close()


def client_keys(appended: Iterable[Appended], client_id: int) -> list[bytes]:
    """Keys of messages that belong to ``client_id`` (key ``client_id/table``)."""
    prefix = f"{client_id}/".encode()
    return [a.key for a in appended if a.key.startswith(prefix)]


def warehouse() -> Any:
    conn = psycopg2.connect(connect_timeout=5, **WAREHOUSE)
    conn.autocommit = True
    return conn


def table_rows(schema: str, table: str, columns: list[str]) -> list[tuple[Any, ...]]:
    """Rows of ``schema.table`` in the demo warehouse ([] while it does not exist yet)."""
    try:
        with closing(warehouse()) as conn, conn.cursor() as cur:
            cur.execute(
                sql.SQL("SELECT {} FROM {} ORDER BY 1").format(
                    sql.SQL(", ").join(sql.Identifier(c) for c in columns),
                    sql.Identifier(schema, table),
                )
            )
            return list(cur.fetchall())
    except (psycopg2.errors.UndefinedTable, psycopg2.errors.InvalidSchemaName):
        return []
    except psycopg2.OperationalError:
        return []


def schema_tables(schema: str) -> set[str]:
    with closing(warehouse()) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (schema,)
        )
        return {row[0] for row in cur.fetchall()}
