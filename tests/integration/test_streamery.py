"""The streamery on real Kafka, S3 and spool: what lands in registered batches is exactly what
was produced, per table and in order, through kills, an S3 outage and a burst.

Each test uses its own topic, consumer group, metrics port and fresh clients, so it never sees
the stack's own streamery or other tests' data.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from common.settings import SharedSettings
from services.streamery.keys import parse_object_key
from support.stack import stack, wait_for
from support.streamery import (
    SCHEMA,
    Landed,
    Produced,
    StreameryProcess,
    committed,
    end_offsets,
    gate_messages,
    new_clients,
    record_line,
    scratch_topic,
    sequences,
)

MiB = 1024 * 1024
SCHEMA_2 = {"properties": {**SCHEMA["properties"], "extra": {"type": "boolean"}}}
TABLES = ["orders", "users", "we/ird ..name \"'", "ünïcödé 表"]
FAST = {"SKEIN_STREAMERY_MAX_BATCH_AGE_S": "1", "SKEIN_STREAMERY_MAX_BATCH_BYTES": "65536"}


@pytest.fixture
def topic(settings: SharedSettings) -> Iterator[str]:
    with scratch_topic(settings) as name:
        yield name


@pytest.fixture
def landed(settings: SharedSettings) -> Iterator[Landed]:
    client = Landed(settings)
    yield client
    client.close()


@pytest.fixture
def streamery(topic: str, tmp_path: Path) -> Iterator[StreameryProcess]:
    process = StreameryProcess(topic, tmp_path, env=dict(FAST))
    yield process
    if process.proc is not None and process.proc.poll() is None:
        process.proc.kill()
        process.proc.wait(10)


@pytest.fixture
def s3_restored() -> Iterator[None]:
    yield
    stack("s3-start")


def all_registered(landed: Landed, clients: list[int], produced: Produced) -> bool:
    return landed.record_count(clients) >= produced.records


def interleaved(clients: list[int], rounds: int, produced: Produced, per_request: int = 40) -> None:
    """Requests of every (client, table) in turn, each split over several small messages;
    halfway through, one table's schema changes."""
    sequence = 0
    pad = "p" * 150
    for r in range(rounds):
        for client in clients:
            for table in TABLES:
                lines = [
                    record_line(sequence + i, {"id": sequence + i, "v": f"{client}-{table}" + pad})
                    for i in range(per_request)
                ]
                sequence += per_request
                schema = SCHEMA_2 if table == "users" and r >= rounds // 2 else SCHEMA
                produced.send(gate_messages(client, table, lines, schema=schema, max_bytes=1500))
    produced.flush()


def test_every_batch_holds_one_tables_records_in_kafka_order(
    settings: SharedSettings, topic: str, streamery: StreameryProcess, landed: Landed
) -> None:
    clients = new_clients(3)
    produced = Produced(settings, topic)
    streamery.start()
    interleaved(clients, 12, produced)

    wait_for(lambda: all_registered(landed, clients, produced), timeout=90, what="registered")
    assert landed.lines(clients) == produced.lines  # one (client, table) per batch, in order

    batches = landed.batches(clients)
    assert len(batches) > len(clients) * len(TABLES)  # size cuts made several per table
    for batch in batches:
        key = parse_object_key(batch["object_key"])
        assert (key.client_id, key.table_name, key.partition) == (
            batch["client_id"],
            batch["table_name"],
            batch["partition"],
        )
        assert (key.first_offset, key.last_offset) == (batch["first_offset"], batch["last_offset"])
    # A schema change inside a table's stream starts a new header line: every record sits
    # under the header it was produced with.
    for batch in (b for b in batches if b["table_name"] == "users"):
        for header, lines in landed.sections(batch):
            has_extra = "extra" in (header.schema or {}).get("properties", {})
            first_of_second_half = min(
                sequences(produced.lines[(batch["client_id"], "users")])[240:]
            )
            assert all((s >= first_of_second_half) == has_extra for s in sequences(lines))

    cut = streamery.metrics()
    assert cut.get('skein_streamery_batches_cut_total{reason="size"}', 0) > 0
    assert streamery.stop() == 0
    ends = end_offsets(settings, topic)
    assert committed(settings, topic, streamery.group) == {
        p: (end if end > 0 else -1001) for p, end in ends.items()
    }


@pytest.mark.slow
def test_sigkill_mid_stream_and_restart_loses_and_duplicates_nothing(
    settings: SharedSettings, topic: str, streamery: StreameryProcess, landed: Landed
) -> None:
    streamery.env["SKEIN_STREAMERY_COMMIT_INTERVAL_S"] = "3"  # registered, not yet committed
    # A killed member's partitions come back to the next start after this (the least allowed).
    streamery.env["SKEIN_STREAMERY_SESSION_TIMEOUT_MS"] = "6000"
    clients = new_clients(2)
    produced = Produced(settings, topic)
    done = threading.Event()

    def produce() -> None:
        sequence = 0
        while not done.is_set():
            for client in clients:
                for table in TABLES[:3]:
                    lines = [
                        record_line(sequence + i, {"id": sequence + i, "v": "x" * 80})
                        for i in range(50)
                    ]
                    sequence += 50
                    produced.send(gate_messages(client, table, lines, max_bytes=3000))
            produced.producer.poll(0)
            time.sleep(0.02)  # a steady stream, not a synchronisation
        produced.flush()

    writer = threading.Thread(target=produce)
    writer.start()
    rng = random.Random(5)
    skipped = 0.0  # re-read after a kill: registered before it, not yet committed
    try:
        for _ in range(4):
            streamery.start()
            # Mid-stream: it owns the partitions and has registered batches, more are in flight.
            wait_for(
                lambda: streamery.metrics().get("skein_streamery_batches_registered_total", 0) > 0,
                timeout=60,
                what="registering",
            )
            time.sleep(rng.uniform(0.5, 2.5))
            skipped += streamery.metrics().get("skein_streamery_messages_skipped_total", 0)
            streamery.kill()
        streamery.start()
    finally:
        done.set()
        writer.join()

    wait_for(lambda: all_registered(landed, clients, produced), timeout=120, what="registered")
    assert streamery.stop() == 0
    got = landed.lines(clients)
    assert got.keys() == produced.lines.keys()
    for stream, lines in produced.lines.items():
        assert sequences(got[stream]) == sequences(lines), stream  # no loss, no duplicate
        assert got[stream] == lines
    assert landed.record_count(clients) == produced.records
    assert streamery.log().count("high-water marks read") >= 5
    assert skipped > 0


@pytest.mark.slow
def test_partitions_moving_between_streameries_lose_and_duplicate_nothing(
    settings: SharedSettings,
    topic: str,
    streamery: StreameryProcess,
    landed: Landed,
    tmp_path: Path,
) -> None:
    clients = new_clients(2)
    produced = Produced(settings, topic)
    second = StreameryProcess(topic, tmp_path / "second", env=dict(FAST), group=streamery.group)
    second.log_dir.mkdir()
    try:
        streamery.start()
        interleaved(clients, 4, produced)
        second.start()  # scale out: some partitions are revoked from the first and move
        wait_for(lambda: "partitions assigned" in second.log(), timeout=60, what="rebalance")
        interleaved(clients, 4, produced)
        assert streamery.stop() == 0  # scale in: the second takes every partition
        interleaved(clients, 4, produced)
        wait_for(lambda: all_registered(landed, clients, produced), timeout=120, what="all")
        assert second.stop() == 0
    finally:
        if second.proc is not None and second.proc.poll() is None:
            second.proc.kill()
    assert "partitions revoked" in streamery.log()
    assert landed.lines(clients) == produced.lines
    assert committed(settings, topic, streamery.group) == {
        p: (e if e > 0 else -1001) for p, e in end_offsets(settings, topic).items()
    }


@pytest.mark.slow
def test_s3_outage_commits_nothing_holds_memory_and_flows_after(
    settings: SharedSettings,
    topic: str,
    streamery: StreameryProcess,
    landed: Landed,
    s3_restored: None,
) -> None:
    limit = 64 * MiB
    streamery.env["SKEIN_STREAMERY_MEMORY_LIMIT_BYTES"] = str(limit)
    clients = new_clients(2)
    produced = Produced(settings, topic)
    streamery.start()
    interleaved(clients, 2, produced)
    wait_for(lambda: all_registered(landed, clients, produced), timeout=60, what="first records")
    # Everything so far is registered; its offsets are committed within the commit interval.
    ends = {p: (e if e > 0 else -1001) for p, e in end_offsets(settings, topic).items()}
    wait_for(
        lambda: committed(settings, topic, streamery.group) == ends,
        timeout=30,
        interval=0.5,
        what="first commits",
    )

    stack("s3-stop")
    before = committed(settings, topic, streamery.group)
    registered_before = len(landed.batches(clients))
    payload = orjson.dumps({"pad": "y" * 400})
    sequence = 10**6
    while produced.bytes < 3 * limit:  # three times the memory limit arrives during the outage
        for client in clients:
            lines = [
                record_line(sequence + i, {"id": sequence + i, "v": payload.decode()})
                for i in range(1000)
            ]
            sequence += 1000
            produced.send(gate_messages(client, "orders", lines))
    produced.flush()

    def holding() -> bool:
        assert committed(settings, topic, streamery.group) == before
        metrics = streamery.metrics()
        return bool(
            metrics["skein_streamery_paused"] == 1
            and metrics["skein_streamery_upload_failures_total"] > 0
        )

    # Paused on its failed uploads; then held there over eight commit intervals.
    wait_for(holding, timeout=30, interval=1, what="the streamery to pause on S3")
    deadline = time.monotonic() + 8
    while time.monotonic() < deadline:
        assert holding()
        time.sleep(1)
    assert len(landed.batches(clients)) == registered_before
    peak = streamery.peak_rss()  # the kernel's high-water mark, since the process started
    print(f"S3 outage: peak RSS {peak / MiB:.0f} MiB")
    assert peak <= limit + 150 * MiB, f"RSS {peak / MiB:.0f} MiB during the outage"

    stack("s3-start")
    wait_for(lambda: all_registered(landed, clients, produced), timeout=180, what="flow after")
    assert landed.lines(clients) == produced.lines
    assert streamery.stop() == 0
    assert committed(settings, topic, streamery.group) == {
        p: (e if e > 0 else -1001) for p, e in end_offsets(settings, topic).items()
    }


@pytest.mark.slow
def test_a_burst_of_ten_times_the_memory_limit_stays_within_it(
    settings: SharedSettings, topic: str, streamery: StreameryProcess, landed: Landed
) -> None:
    limit = 64 * MiB
    streamery.env = {"SKEIN_STREAMERY_MEMORY_LIMIT_BYTES": str(limit)}  # default cut policy
    clients = new_clients(2)
    produced = Produced(settings, topic)
    streamery.start()
    peak = streamery.rss()
    sampling = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not sampling.is_set():
            peak = max(peak, streamery.rss())
            time.sleep(0.05)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        # ~1 MiB messages of ~300-byte records for 16 tables, reused to keep the producer fast.
        templates = {
            (client, f"burst_{t}"): gate_messages(
                client,
                f"burst_{t}",
                [record_line(i, {"id": i, "v": "z" * 280}) for i in range(3400)],
            )
            for client in clients
            for t in range(8)
        }
        while produced.bytes < 10 * limit:
            for messages in templates.values():
                produced.send(messages)
        produced.flush()
        wait_for(
            lambda: all_registered(landed, clients, produced), timeout=300, what="burst drained"
        )
    finally:
        sampling.set()
        sampler.join()
    assert streamery.stop() == 0
    print(f"burst {produced.bytes / MiB:.0f} MiB: peak RSS {peak / MiB:.0f} MiB")
    assert landed.record_count(clients) == produced.records
    assert peak <= limit + 150 * MiB, f"peak RSS {peak / MiB:.0f} MiB, limit {limit / MiB:.0f}"
    # Registered batches of each table cover its offsets without gaps or overlaps.
    for stream in produced.lines:
        batches = sorted(
            (b for b in landed.batches([stream[0]]) if b["table_name"] == stream[1]),
            key=lambda b: b["first_offset"],
        )
        assert sum(b["record_count"] for b in batches) == len(produced.lines[stream])
