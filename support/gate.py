"""The gate from inside: the records topic it appends to (watched, to prove what a request
did or did not write), its internal metrics, and records in the form ``/v2/import/push`` takes."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition

from common.settings import SharedSettings

GATE_METRICS = "http://127.0.0.1:9101/metrics"  # internal port, not the public one


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
