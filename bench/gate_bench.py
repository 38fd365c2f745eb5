"""Gate throughput and latency against the running local stack, with Kafka's own producer as the
baseline measured in the same run.

    .venv/bin/python bench/gate_bench.py [--seconds 15] [--concurrency 8 16 32]

1. Open loop: batches offered at a fixed rate (default 25,000 records/s); latency percentiles.
2. Closed loop: N concurrent clients POST 1,000-record batches (~300-byte records) to
   /v2/import/batch as fast as they are answered; records/s accepted and latency percentiles.
3. Baseline: kafka-tools' ProducerPerformance writes the very message values the gate produced
   (same bytes, acks=all, idempotent, lz4) to a separate RF 3 / min ISR 2 topic, deleted after;
   the median of three runs.
4. Authentication: the same ProducerPerformance run over the stack's SASL/SCRAM-SHA-512 listener
   and over a PLAINTEXT listener the brokers get for this measurement only (a rolling restart
   adds 127.0.0.1:N9095, anonymous writes allowed on this bench's topics; another removes it),
   five runs each, alternating which goes first: the median change is authentication's cost.
Prints each figure and the ratio gate bytes/s : raw producer bytes/s, and where the machine's
CPU went during the best closed loop and the baseline (bench/cpu_account.py).
The open loop runs first, while the pipeline keeps up; after the closed loops the streamery and
loader drain millions of records on the same cores.

Over 400 lines on purpose: a benchmark is one script run and read top to bottom, its four
phases sharing the stack's tenants, the produced message values and the one report; its shared
helpers (tenants, CPU accounting) already live in ``support/`` and ``bench/cpu_account.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import os
import random
import resource
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import orjson
from bench_records import make_record
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    NewTopic,
    ResourcePatternType,
    ResourceType,
)
from cpu_account import CpuWindow, stack_groups
from kafka_tools import client_properties, trim_consumed

from common import db, kafka_admin, tokens
from common.settings import SharedSettings
from common.wire import Header, TableRecords, encode_messages
from services.control import accounts
from services.gate.records import upsert_line

ROOT = Path(__file__).resolve().parent.parent
RECORDS_PER_BATCH = 1000
SCHEMA = {
    "properties": {
        "id": {"type": "integer"},
        "customer": {"type": "string"},
        "email": {"type": "string"},
        "amount": {"type": "number"},
        "currency": {"type": "string"},
        "status": {"type": "string"},
        "created_at": {"type": "string", "format": "date-time"},
        "note": {"type": "string"},
        "address": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "zip": {"type": "string"}},
        },
    }
}


def make_bodies(count: int) -> list[bytes]:
    rng = random.Random(7)
    bodies = []
    for b in range(count):
        messages = [
            {"action": "upsert", "sequence": b * RECORDS_PER_BATCH + i, "data": make_record(i, rng)}
            for i in range(RECORDS_PER_BATCH)
        ]
        body = {
            "table_name": f"bench_{b % 8}",
            "schema": SCHEMA,
            "key_names": ["id"],
            "messages": messages,
        }
        bodies.append(orjson.dumps(body))
    return bodies


class RawHttp:
    """A minimal keep-alive HTTP/1.1 client over asyncio streams: request bytes are built once,
    so the load generator spends little CPU of the two cores the gate and Kafka share."""

    def __init__(self) -> None:
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, request: bytes) -> int:
        try:
            return await self._post(request)
        except (asyncio.IncompleteReadError, ConnectionError):
            # The server closed an idle keep-alive connection: open a new one, send again.
            await self.close()
            self.reader = self.writer = None
            return await self._post(request)

    async def _post(self, request: bytes) -> int:
        if self.writer is None or self.reader is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", 8080)
        self.writer.write(request)
        await self.writer.drain()
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        await self.reader.readexactly(length)
        return status

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def requests_for(token: str, bodies: list[bytes]) -> list[bytes]:
    return [
        (
            f"POST /v2/import/batch HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        + body
        for body in bodies
    ]


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] if ordered else float("nan")


async def closed_loop(requests: list[bytes], concurrency: int, seconds: float) -> dict[str, float]:
    latencies: list[float] = []
    errors = 0
    stop = time.monotonic() + seconds

    async def worker(n: int) -> None:
        nonlocal errors
        client = RawHttp()
        i = n
        while time.monotonic() < stop:
            started = time.monotonic()
            if await client.post(requests[i % len(requests)]) == 202:
                latencies.append(time.monotonic() - started)
            else:
                errors += 1
            i += concurrency
        await client.close()

    began = time.monotonic()
    await asyncio.gather(*(worker(n) for n in range(concurrency)))
    elapsed = time.monotonic() - began
    return {
        "records_per_s": len(latencies) * RECORDS_PER_BATCH / elapsed,
        "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
        "errors": errors,
    }


async def open_loop(
    requests: list[bytes], records_per_s: float, seconds: float
) -> dict[str, float]:
    interval = RECORDS_PER_BATCH / records_per_s
    latencies: list[float] = []
    errors = 0
    idle: list[RawHttp] = []

    async def one(i: int) -> None:
        nonlocal errors
        client = idle.pop() if idle else RawHttp()
        started = time.monotonic()
        if await client.post(requests[i % len(requests)]) == 202:
            latencies.append(time.monotonic() - started)
        else:
            errors += 1
        idle.append(client)

    tasks = []
    began = time.monotonic()
    i = 0
    while time.monotonic() - began < seconds:
        tasks.append(asyncio.create_task(one(i)))
        i += 1
        await asyncio.sleep(max(0.0, began + i * interval - time.monotonic()))
    await asyncio.gather(*tasks)
    for client in idle:
        await client.close()
    return {
        "offered_records_per_s": records_per_s,
        "accepted": len(latencies) * RECORDS_PER_BATCH,
        "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
        "errors": errors,
    }


def message_values(bodies: list[bytes]) -> list[bytes]:
    """The exact Kafka message values the gate produces for these bodies."""
    values = []
    for body in bodies:
        parsed = orjson.loads(body)
        header = Header(
            1,
            parsed["table_name"],
            ("id",),
            SCHEMA,
            None,
            "2026-11-26T10:00:00.000000Z",
            uuid.uuid4().hex,
            "batch",
        )
        table = TableRecords(
            header, [upsert_line(m["sequence"], m["data"], None) for m in parsed["messages"]]
        )
        values.extend(encode_messages(table, 1024 * 1024))
    return values


def raw_producer(
    settings: SharedSettings,
    values: list[bytes],
    total_bytes: int,
    producer: SharedSettings | None = None,
) -> dict[str, float]:
    """kafka-tools ProducerPerformance over the same message values, to a throwaway topic
    (created with ``settings``, written as ``producer``: by default the same)."""
    producer = producer or settings
    admin = AdminClient(settings.kafka_config())
    topic = f"skein.bench.{uuid.uuid4().hex[:8]}"
    admin.create_topics([NewTopic(topic, 12, 3, config={"min.insync.replicas": "2"})])[
        topic
    ].result(30)
    libs = glob.glob(str(ROOT / ".cache" / "kafka-*" / "libs"))
    if not libs:
        raise SystemExit("Kafka jars not found under .cache/: run make up first")
    delimiter = "\x1e"
    properties = client_properties(producer)
    try:
        with tempfile.NamedTemporaryFile("wb", suffix=".payload", delete=False) as f:
            f.write(delimiter.encode().join(values))
            payload = f.name
        count = max(1, total_bytes // (sum(len(v) for v in values) // len(values)))
        cmd = [
            "java",
            "-Xmx512m",
            "-cp",
            f"{libs[0]}/*",
            "org.apache.kafka.tools.ProducerPerformance",
            "--topic",
            topic,
            "--num-records",
            str(count),
            "--throughput",
            "-1",
            "--payload-file",
            payload,
            "--payload-delimiter",
            delimiter,
            "--producer.config",
            properties,
            "--producer-props",
            "acks=all",
            "enable.idempotence=true",
            "compression.type=lz4",
            "linger.ms=5",
            "max.request.size=8388608",
            "batch.size=1048576",
        ]
        cpu = CpuWindow(stack_groups())
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu.start()
        began = time.monotonic()
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=True).stdout
        elapsed = time.monotonic() - began
        cpu.stop()
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        java = (after.ru_utime + after.ru_stime) - (children.ru_utime + children.ru_stime)
        sent_gb = count * (sum(len(v) for v in values) / len(values)) / 1e9
        summary = [line for line in out.splitlines() if "records sent" in line][-1]
        # "N records sent, R records/sec (M MB/sec), A ms avg latency, ..."
        mb_per_s = float(summary.split("(")[1].split(" MB/sec")[0])
        return {
            "messages": count,
            "bytes_per_s": mb_per_s * 1024 * 1024,
            "wall_s": elapsed,
            "summary": summary,
            "cpu": cpu.report(sent_gb),
            "java_cpu_s_per_gb": java / sent_gb,
        }  # type: ignore[dict-item]
    finally:
        admin.delete_topics([topic])[topic].result(30)
        Path(payload).unlink(missing_ok=True)
        Path(properties).unlink(missing_ok=True)


BENCH_PORT = 9095  # node N listens on N9095 while the PLAINTEXT comparison runs
STACK = ROOT / "deploy" / "local" / "stack.sh"


def restart_brokers(settings: SharedSettings, plaintext: bool) -> None:
    """Restart the brokers one at a time (each back in sync before the next), with or without
    the bench's extra PLAINTEXT listener (stack.sh, SKEIN_KAFKA_BENCH_PLAINTEXT)."""
    env = {k: v for k, v in os.environ.items() if k != "SKEIN_KAFKA_BENCH_PLAINTEXT"}
    if plaintext:
        env["SKEIN_KAFKA_BENCH_PLAINTEXT"] = "1"
    for node in ("1", "2", "3"):
        for command in ("kafka-stop", "kafka-start"):
            subprocess.run([str(STACK), command, node], env=env, check=True, capture_output=True)
        kafka_admin.wait_ready(kafka_admin.admin(settings), settings.topic, 3, 3, timeout=180)


@contextmanager
def plaintext_listener(settings: SharedSettings) -> Iterator[SharedSettings]:
    """Each broker also listens PLAINTEXT on 127.0.0.1:N9095 (anonymous: allowed to write this
    bench's ``skein.bench.`` topics only) until the block ends; yields settings reaching it."""
    admin = AdminClient(settings.kafka_config())
    pattern = ("skein.bench.", ResourcePatternType.PREFIXED, "User:ANONYMOUS", "*")
    acls = [
        AclBinding(ResourceType.TOPIC, *pattern, op, AclPermissionType.ALLOW)
        for op in (AclOperation.WRITE, AclOperation.DESCRIBE)
    ]
    try:
        restart_brokers(settings, plaintext=True)
        for future in admin.create_acls(acls).values():
            future.result(30)
        bootstrap = ",".join(f"127.0.0.1:{n}{BENCH_PORT}" for n in (1, 2, 3))
        yield settings.model_copy(update={"kafka_bootstrap": bootstrap, "kafka_username": None})
    finally:
        anonymous = AclBindingFilter(
            ResourceType.TOPIC, *pattern, AclOperation.ANY, AclPermissionType.ANY
        )
        for future in admin.delete_acls([anonymous]).values():
            future.result(30)
        restart_brokers(settings, plaintext=False)


def authentication_cost(settings: SharedSettings, values: list[bytes], total: int) -> None:
    """ProducerPerformance over SASL/SCRAM and over PLAINTEXT on the same brokers, five runs
    each, alternating which goes first (the later run of a pair finds warmer page caches)."""
    sasl: list[float] = []
    plain: list[float] = []
    with plaintext_listener(settings) as anonymous:
        for i in range(5):
            pair = [(sasl, settings), (plain, anonymous)]
            for rates, producer in pair if i % 2 == 0 else pair[::-1]:
                rates.append(raw_producer(settings, values, total, producer)["bytes_per_s"])
    s, p = sorted(sasl)[2], sorted(plain)[2]
    print(
        f"kafka producer over SASL/SCRAM-SHA-512: median {s / 1e6:.1f} MB/s "
        f"({', '.join(f'{x / 1e6:.1f}' for x in sasl)}); over PLAINTEXT: median {p / 1e6:.1f} "
        f"MB/s ({', '.join(f'{x / 1e6:.1f}' for x in plain)})"
    )
    print(f"authentication's cost: {(1 - s / p) * 100:+.1f} % throughput (target <= 10 % slower)")


def latency_text(result: dict[str, float]) -> str:
    return f"p50 {result['p50_ms']:.0f} ms p99 {result['p99_ms']:.0f} ms errors {result['errors']}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[8, 16, 32])
    parser.add_argument("--offered", type=float, default=25_000)
    parser.add_argument(
        "--auth-only", action="store_true", help="only the SASL vs PLAINTEXT comparison"
    )
    args = parser.parse_args()

    settings = SharedSettings()
    with closing(db.connect()) as conn:
        client = accounts.create_client(conn, "bench")
        token = tokens.create_api_token(conn, client["client_id"])["token"]
    bodies = make_bodies(16)
    requests = requests_for(token, bodies)
    values = message_values(bodies)
    if args.auth_only:
        authentication_cost(settings, values, 500_000_000)
        return
    record_bytes = sum(len(v) for v in values) / (len(bodies) * RECORDS_PER_BATCH)
    print(
        f"batch: {RECORDS_PER_BATCH} records, {len(bodies[0]) / 1024:.0f} KiB body, "
        f"{record_bytes:.0f} bytes per record line in Kafka"
    )

    # The open loop first, while the pipeline keeps up (after the closed loops the streamery and
    # loader would still be draining millions of records on the same two cores).
    result = asyncio.run(open_loop(requests, args.offered, args.seconds))
    print(f"gate open loop at {args.offered:,.0f} records/s offered:", end=" ")
    print(f"accepted {result['accepted']:,}", latency_text(result))

    best, best_cpu = 0.0, ""
    for concurrency in args.concurrency:
        cpu = CpuWindow(stack_groups())
        cpu.start()
        result = asyncio.run(closed_loop(requests, concurrency, args.seconds))
        cpu.stop()
        rate = result["records_per_s"]
        if rate > best:
            best = rate
            best_cpu = cpu.report(rate * args.seconds * record_bytes / 1e9)
        print(f"gate closed loop, {concurrency:>2} clients: {rate:>9,.0f} records/s", end=" ")
        print(latency_text(result))
    print(f"  during the best closed loop:\n{best_cpu}")

    gate_bytes_per_s = best * record_bytes
    # The raw producer's rate varies by 2x from run to run here (it shares the cores with the
    # pipeline draining what the gate accepted): the median of three runs is the baseline.
    runs = sorted(
        (
            raw_producer(
                settings, values, total_bytes=int(gate_bytes_per_s * args.seconds) or 100_000_000
            )
            for _ in range(3)
        ),
        key=lambda r: r["bytes_per_s"],
    )
    raw = runs[1]
    raw_mb = raw["bytes_per_s"] / 1e6
    each = ", ".join(f"{r['bytes_per_s'] / 1e6:.1f}" for r in runs)
    print(
        f"kafka ProducerPerformance (same bytes, acks=all, lz4): median {raw_mb:.1f} MB/s ({each})"
    )
    print(f"  {raw['summary']}")
    print(
        f"  ProducerPerformance's own CPU: {raw['java_cpu_s_per_gb']:.2f} CPU-s/GB "
        "(JVM start included)"
    )
    print(raw["cpu"])
    print(f"gate best: {gate_bytes_per_s / 1e6:.1f} MB/s of record bytes = {best:,.0f} records/s")
    print(f"ratio gate/raw producer bytes/s: {gate_bytes_per_s / raw['bytes_per_s']:.2f}")
    authentication_cost(settings, values, int(gate_bytes_per_s * args.seconds) or 100_000_000)
    trim_consumed(settings)


if __name__ == "__main__":
    main()
