"""Show data flowing through the running local stack: a demo client posts a batch to the gate,
and the records are read back from Kafka. Run by `make up` (stack.sh) after the services start."""

from __future__ import annotations

import sys
import time
import uuid
from contextlib import closing
from pathlib import Path

import httpx
import orjson
from confluent_kafka import Consumer, TopicPartition

from common import control, db
from common.settings import SharedSettings
from common.wire import decode_message

GATE = "http://127.0.0.1:8080"


def demo_token(run_dir: Path) -> tuple[int, str]:
    """The demo client's id and token, created once and kept in the run directory."""
    saved = run_dir / "demo-client.json"
    if saved.exists():
        data = orjson.loads(saved.read_bytes())
        return data["client_id"], data["token"]
    with closing(db.connect()) as conn:
        client = control.create_client(conn, "demo")
        token = control.create_api_token(conn, client["client_id"])
    saved.write_bytes(orjson.dumps({"client_id": client["client_id"], "token": token["token"]}))
    saved.chmod(0o600)
    return client["client_id"], token["token"]


def main(run_dir: Path) -> int:
    settings = SharedSettings()
    client_id, token = demo_token(run_dir)
    table = "demo_orders"
    run = uuid.uuid4().hex[:8]
    body = {
        "table_name": table,
        "schema": {"properties": {"id": {"type": "string"}, "amount": {"type": "number"}}},
        "key_names": ["id"],
        "messages": [
            {
                "action": "upsert",
                "sequence": time.time_ns() + i,
                "data": {"id": f"{run}-{i}", "amount": i * 1.5},
            }
            for i in range(5)
        ],
    }
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": f"demo-{run}"})
    meta = consumer.list_topics(settings.topic, timeout=10).topics[settings.topic]
    starts = []
    for p in meta.partitions:
        _, high = consumer.get_watermark_offsets(TopicPartition(settings.topic, p), timeout=10)
        starts.append(TopicPartition(settings.topic, p, high))
    consumer.assign(starts)

    response = httpx.post(
        f"{GATE}/v2/import/batch",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        content=orjson.dumps(body),
        timeout=30,
    )
    print(f"demo: POST /v2/import/batch (client {client_id}, 5 records)", end=" ")
    print(f"-> {response.status_code} {response.text}")
    if response.status_code != 202:
        return 1
    key = f"{client_id}/{table}".encode()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is None or msg.error() or msg.key() != key:
            continue
        _, lines = decode_message(msg.value())
        ids = [orjson.loads(line)["data"]["id"] for line in lines]
        if ids and ids[0].startswith(run):
            where = f"{settings.topic} partition {msg.partition()} offset {msg.offset()}"
            print(
                f"demo: in Kafka {where}, key {key.decode()}: {len(ids)} records {ids[0]}…{ids[-1]}"
            )
            consumer.close()
            return 0
    consumer.close()
    print("demo: the records did not appear in Kafka within 30 s")
    return 1


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
