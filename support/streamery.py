"""The streamery on its own, for its integration tests and benchmark: a throwaway topic, records in
the gate's exact wire format, the streamery as a subprocess, and the batches read back."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
from botocore.config import Config
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from common import db
from common.s3 import client as s3_client
from common.settings import SharedSettings
from common.wire import Header, TableRecords, dumps, encode_messages, message_key
from services.control import accounts
from services.streamery.batch import read_body
from support.stack import ROOT, free_port, healthy, wait_for

SCHEMA = {"properties": {"id": {"type": "integer"}, "v": {"type": "string"}}}


@contextmanager
def scratch_topic(
    settings: SharedSettings, partitions: int = 6, prefix: str = "skein.test"
) -> Iterator[str]:
    """A fresh RF 3 / min ISR 2 topic, deleted afterwards."""
    admin = AdminClient(settings.kafka_config())
    topic = f"{prefix}.{uuid.uuid4().hex[:10]}"
    new = NewTopic(topic, partitions, 3, config={"min.insync.replicas": "2"})
    admin.create_topics([new])[topic].result(30)
    wait_for(
        lambda: len(admin.list_topics(topic, timeout=5).topics[topic].partitions) == partitions,
        timeout=30,
        what="topic metadata",
    )
    try:
        yield topic
    finally:
        admin.delete_topics([topic])[topic].result(30)


def new_clients(count: int, prefix: str = "streamery-test") -> list[int]:
    with closing(db.connect()) as conn:
        return [
            accounts.create_client(conn, f"{prefix}-{uuid.uuid4().hex[:8]}")["client_id"]
            for _ in range(count)
        ]


def record_line(sequence: int, data: dict[str, Any]) -> bytes:
    return dumps({"action": "upsert", "sequence": sequence, "data": data})


def gate_messages(
    client_id: int,
    table: str,
    lines: list[bytes],
    *,
    schema: dict[str, Any] | None = SCHEMA,
    max_bytes: int = 1024 * 1024,
) -> list[tuple[bytes, bytes]]:
    """(key, value) of the Kafka messages the gate writes for one request's records."""
    header = Header(
        client_id,
        table,
        ("id",),
        schema,
        None,
        time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime()),
        uuid.uuid4().hex,
        "batch",
    )
    key = message_key(client_id, table)
    return [(key, v) for v in encode_messages(TableRecords(header, lines), max_bytes)]


class Produced:
    """What a test wrote: each (client, table)'s record lines in produce order."""

    def __init__(self, settings: SharedSettings, topic: str, *, keep_lines: bool = True) -> None:
        self.topic = topic
        self.keep_lines = keep_lines
        self.producer = Producer(
            {
                **settings.kafka_config(),
                "enable.idempotence": True,
                "acks": "all",
                "compression.type": "lz4",
                "linger.ms": 5,
                "message.max.bytes": 8 * 1024 * 1024,
            }
        )
        self.lines: dict[tuple[int, str], list[bytes]] = {}
        self.bytes = 0
        self.messages = 0
        self.records = 0

    def send(self, messages: Iterable[tuple[bytes, bytes]]) -> None:
        for key, value in messages:
            if self.keep_lines:
                client, _, table = key.decode().partition("/")
                self.lines.setdefault((int(client), table), []).extend(value.split(b"\n")[1:])
            self.records += value.count(b"\n")
            while True:
                try:
                    self.producer.produce(self.topic, value=value, key=key)
                    break
                except BufferError:
                    self.producer.poll(0.05)
            self.producer.poll(0)
            self.bytes += len(value)
            self.messages += 1

    def flush(self) -> None:
        assert self.producer.flush(60) == 0, "not every message was acknowledged"


@dataclass
class StreameryProcess:
    """``python -m services.streamery`` on a test topic, with its own group and metrics port."""

    topic: str
    log_dir: Path
    env: dict[str, str] = field(default_factory=dict)
    group: str = field(default_factory=lambda: f"streamery-test-{uuid.uuid4().hex[:8]}")
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    def start(self) -> StreameryProcess:
        env = {
            **os.environ,
            "SKEIN_TOPIC": self.topic,
            "SKEIN_STREAMERY_GROUP_ID": self.group,
            "SKEIN_STREAMERY_METRICS_PORT": str(self.port),
            **self.env,
        }
        self.starts += 1
        with (self.log_dir / f"streamery-{self.starts}.log").open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "services.streamery"],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        wait_for(self._healthy, timeout=30, what="streamery /healthz")
        return self

    def _healthy(self) -> bool:
        assert self.proc is not None and self.proc.poll() is None, "streamery exited"
        return healthy(f"http://127.0.0.1:{self.port}/healthz")

    def metrics(self) -> dict[str, float]:
        text = httpx.get(f"http://127.0.0.1:{self.port}/metrics", timeout=5).text
        values: dict[str, float] = {}
        for line in text.splitlines():
            if line.startswith("skein_streamery_") or line.startswith("process_"):
                name, _, value = line.rpartition(" ")
                values[name] = float(value)
        return values

    def rss(self) -> int:
        return self._status_bytes("VmRSS:")

    def peak_rss(self) -> int:
        """The most resident memory the process has had since it started (the kernel's mark)."""
        return self._status_bytes("VmHWM:")

    def _status_bytes(self, field: str) -> int:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(field):
                return int(line.split()[1]) * 1024
        return 0

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM and wait; the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise

    def log(self) -> str:
        return "".join(p.read_text() for p in sorted(self.log_dir.glob("streamery-*.log")))


def committed(settings: SharedSettings, topic: str, group: str) -> dict[int, int]:
    consumer = Consumer({**settings.kafka_config(), "group.id": group})
    try:
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        tps = consumer.committed([TopicPartition(topic, p) for p in parts], timeout=10)
        return {tp.partition: tp.offset for tp in tps}
    finally:
        consumer.close()


def end_offsets(settings: SharedSettings, topic: str) -> dict[int, int]:
    consumer = Consumer({**settings.kafka_config(), "group.id": "unused"})
    try:
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in parts
        }
    finally:
        consumer.close()


class Landed:
    """The batches the spool lists for some clients, and their objects read back from S3."""

    def __init__(self, settings: SharedSettings) -> None:
        self.settings = settings
        self.http = httpx.Client(
            base_url=settings.spool_url,
            headers={"Authorization": f"Bearer {settings.spool_token.get_secret_value()}"},
            timeout=30,
        )
        self.s3 = s3_client(settings, Config(request_checksum_calculation="when_required"))

    def batches(self, client_ids: Iterable[int]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for client in client_ids:
            r = self.http.get("/v1/batches", params={"client_id": client, "limit": 100_000})
            r.raise_for_status()
            out.extend(r.json()["batches"])
        return out

    def record_count(self, client_ids: Iterable[int]) -> int:
        return sum(b["record_count"] for b in self.batches(client_ids))

    def body(self, object_key: str) -> bytes:
        obj = self.s3.get_object(Bucket=self.settings.s3_bucket, Key=object_key)
        return bytes(obj["Body"].read())

    def sections(self, batch: dict[str, Any]) -> list[tuple[Header, list[bytes]]]:
        return list(read_body(self.body(batch["object_key"])))

    def lines(self, client_ids: Iterable[int]) -> dict[tuple[int, str], list[bytes]]:
        """Each (client, table)'s record lines across its batches in offset order, checking
        that every batch holds one (client, table) only, the one it is registered under."""
        batches = sorted(
            self.batches(client_ids),
            key=lambda b: (b["client_id"], b["table_name"], b["partition"], b["first_offset"]),
        )
        out: dict[tuple[int, str], list[bytes]] = {}
        for batch in batches:
            stream = (batch["client_id"], batch["table_name"])
            sections = self.sections(batch)
            for header, _ in sections:
                assert (header.client_id, header.table_name) == stream, batch["object_key"]
            records = [line for _, lines in sections for line in lines]
            assert len(records) == batch["record_count"], batch["object_key"]
            out.setdefault(stream, []).extend(records)
        return out

    def close(self) -> None:
        self.http.close()


def sequences(lines: list[bytes]) -> list[int]:
    return [orjson.loads(line)["sequence"] for line in lines]
