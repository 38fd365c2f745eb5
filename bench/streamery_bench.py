"""Streamery throughput draining a pre-filled topic, with Kafka's own consumer as the baseline
measured on the same topic in the same run.

    .venv/bin/python bench/streamery_bench.py [--mb 1024] [--tables 16] [--memory-limit-mb 512]

1. A throwaway topic (12 partitions, RF 3, min ISR 2) is filled with ~1 MiB messages in the
   gate's wire format (~300-byte records, one fresh client, ``--tables`` tables).
2. Baseline: kafka-tools' ConsumerPerformance reads every message (its fetch MB/s excludes the
   group join).
3. The streamery (``python -m services.streamery``, its own group) drains the topic: every
   record gzip'ed into batch objects in S3, registered with the spool, offsets committed.
   Timed from its first message read until the last offset is committed; also the steady rate
   between 10 % and 90 % of records registered. Its resident memory is sampled throughout.
Prints MB/s and records/s of both, their ratio, and the peak RSS against the memory limit.
The maximum batch age is 1 s here so the drain's tail does not wait on the 10 s default.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import random
import resource
import string
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # support/ (not installed)
from cpu_account import CpuWindow, stack_groups, with_children
from kafka_tools import client_properties

from common.settings import SharedSettings
from support.stack import ROOT
from support.streamery import (
    Produced,
    StreameryProcess,
    committed,
    end_offsets,
    gate_messages,
    new_clients,
    record_line,
    scratch_topic,
)

MiB = 1024 * 1024


def bench_record(i: int, rng: random.Random) -> dict[str, object]:
    """~300 bytes as JSON, like the gate benchmark's records."""
    return {
        "id": i,
        "customer": "".join(rng.choices(string.ascii_letters, k=16)),
        "email": f"user{i}@example.com",
        "amount": round(rng.random() * 1000, 2),
        "status": rng.choice(["new", "paid", "shipped", "refunded"]),
        "created_at": "2026-11-26T10:00:00.000000Z",
        "note": "".join(rng.choices(string.ascii_lowercase + " ", k=90)),
        "address": {"city": rng.choice(["Lisbon", "Oslo", "Lima"]), "zip": f"{i % 99999:05d}"},
    }


def fill(settings: SharedSettings, topic: str, client: int, tables: int, mb: int) -> Produced:
    produced = Produced(settings, topic, keep_lines=False)
    # 4 distinct requests of 3,400 random-text records per table, cycled: the repeats are
    # megabytes apart, beyond what gzip's and lz4's windows can see, so both compress as they
    # would real data.
    rng = random.Random(7)
    templates = [
        gate_messages(
            client,
            f"bench_{t % tables}",
            [record_line(i, bench_record(i, rng)) for i in range(3400)],
        )
        for t in range(tables * 4)
    ]
    began = time.monotonic()
    while produced.bytes < mb * MiB:
        for messages in templates:
            produced.send(messages)
    produced.flush()
    rate = produced.bytes / MiB / (time.monotonic() - began)
    print(
        f"filled {produced.bytes / MiB:.0f} MiB in {produced.messages} messages ({rate:.0f} MiB/s)"
    )
    return produced


def consumer_performance(settings: SharedSettings, topic: str, messages: int) -> dict[str, float]:
    libs = glob.glob(str(ROOT / ".cache" / "kafka-*" / "libs"))
    if not libs:
        raise SystemExit("Kafka jars not found under .cache/: run make up first")
    properties = client_properties(settings)
    cmd = [
        "java",
        "-Xmx512m",
        "-cp",
        f"{libs[0]}/*",
        "org.apache.kafka.tools.ConsumerPerformance",
        "--bootstrap-server",
        settings.kafka_bootstrap,
        "--topic",
        topic,
        "--messages",
        str(messages),
        "--group",
        f"bench-cp-{topic}",
        "--timeout",
        "60000",
        "--consumer.config",  # Kafka 4.1 (4.2 names it --command-config)
        properties,
    ]
    cpu = CpuWindow(stack_groups())
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu.start()
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)
    finally:
        Path(properties).unlink(missing_ok=True)
    if done.returncode != 0:
        raise SystemExit(f"ConsumerPerformance failed ({done.returncode}): {done.stderr[-2000:]}")
    out = done.stdout
    cpu.stop()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    java = (after.ru_utime + after.ru_stime) - (children.ru_utime + children.ru_stime)
    lines = [line for line in out.splitlines() if line.strip()]
    names = [n.strip() for n in lines[-2].split(",")]
    values = [v.strip() for v in lines[-1].split(",")]
    row = dict(zip(names, values, strict=True))
    return {
        "mb": float(row["data.consumed.in.MB"]),
        "mb_per_s": float(row["MB.sec"]),
        "fetch_mb_per_s": float(row["fetch.MB.sec"]),
        "msgs": float(row["data.consumed.in.nMsg"]),
        "cpu": cpu.report(float(row["data.consumed.in.MB"]) / 1000),  # type: ignore[dict-item]
        "java_cpu_s": java,
    }


def drain(
    settings: SharedSettings,
    topic: str,
    produced: Produced,
    memory_limit: int,
    gzip_level: int,
    log_dir: Path,
) -> dict[str, float]:
    streamery = StreameryProcess(
        topic,
        log_dir,
        env={
            "SKEIN_STREAMERY_MEMORY_LIMIT_BYTES": str(memory_limit),
            "SKEIN_STREAMERY_MAX_BATCH_AGE_S": "1",
            "SKEIN_STREAMERY_GZIP_LEVEL": str(gzip_level),
            "SKEIN_STREAMERY_LOG_LEVEL": "WARNING",
        },
    )
    ends = end_offsets(settings, topic)
    peak = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            with contextlib.suppress(FileNotFoundError, AssertionError):
                peak = max(peak, streamery.rss())
            time.sleep(0.05)

    streamery.start()
    assert streamery.proc is not None
    groups = {"streamery (bench)": lambda: with_children(streamery.proc.pid)}  # type: ignore[union-attr]
    cpu = CpuWindow({**groups, **stack_groups()})
    sampler = threading.Thread(target=sample)
    sampler.start()
    marks: dict[str, float] = {}
    try:
        while True:
            now = time.monotonic()
            m = streamery.metrics()
            read = m.get("skein_streamery_bytes_read_total", 0)
            registered = sum(
                v for k, v in m.items() if k.startswith("skein_streamery_records_registered_total")
            )
            if read > 0 and "first_read" not in marks:
                marks["first_read"] = now
                cpu.start()
            for share in (0.1, 0.9):
                if registered >= share * produced.records:
                    marks.setdefault(f"r{share}", now)
            if registered >= produced.records:
                done = committed(settings, topic, streamery.group)
                if all(done.get(p, -1) >= end for p, end in ends.items() if end > 0):
                    marks["done"] = now
                    cpu.stop()
                    break
            time.sleep(0.2)
        cut = {k: v for k, v in m.items() if k.startswith("skein_streamery_batches_cut_total")}
        written = sum(
            v for k, v in m.items() if k.startswith("skein_streamery_bytes_written_total")
        )
    finally:
        stop.set()
        sampler.join()
        streamery.stop()
    elapsed = marks["done"] - marks["first_read"]
    steady = marks["r0.9"] - marks["r0.1"]
    return {
        "elapsed": elapsed,
        "mb_per_s": produced.bytes / 1e6 / elapsed,
        "records_per_s": produced.records / elapsed,
        "steady_mb_per_s": 0.8 * produced.bytes / 1e6 / steady,
        "steady_records_per_s": 0.8 * produced.records / steady,
        "peak_rss": peak,
        "gzip_ratio": produced.bytes / written if written else 0.0,
        "cuts": cut,  # type: ignore[dict-item]
        "cpu": cpu.report(produced.bytes / 1e9),  # type: ignore[dict-item]
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=int, default=1024, help="MiB to pre-fill")
    parser.add_argument("--tables", type=int, default=16)
    parser.add_argument("--memory-limit-mb", type=int, default=512)
    parser.add_argument("--gzip-level", type=int, default=1)
    args = parser.parse_args()

    settings = SharedSettings()
    (client,) = new_clients(1, prefix="streamery-bench")
    with scratch_topic(settings, partitions=12, prefix="skein.bench") as topic:
        produced = fill(settings, topic, client, args.tables, args.mb)
        baseline = consumer_performance(settings, topic, produced.messages)
        print(
            f"kafka ConsumerPerformance: {baseline['fetch_mb_per_s']:.1f} MB/s while fetching "
            f"({baseline['mb_per_s']:.1f} MB/s including the group join), "
            f"{baseline['msgs']:.0f} messages; its own CPU {baseline['java_cpu_s']:.1f} s "
            f"({baseline['java_cpu_s'] / (baseline['mb'] / 1000):.2f} CPU-s/GB, JVM start included)"
        )
        print(baseline["cpu"])
        with tempfile.TemporaryDirectory() as logs:
            result = drain(
                settings, topic, produced, args.memory_limit_mb * MiB, args.gzip_level, Path(logs)
            )
        ratio = result["mb_per_s"] / baseline["fetch_mb_per_s"]
        print(
            f"streamery (gzip level {args.gzip_level}) drain to S3 + spool + commit: "
            f"{result['mb_per_s']:.1f} MB/s, "
            f"{result['records_per_s']:,.0f} records/s ({result['elapsed']:.1f} s)"
        )
        print(
            f"  steady (10-90 % registered): {result['steady_mb_per_s']:.1f} MB/s, "
            f"{result['steady_records_per_s']:,.0f} records/s; gzip ratio "
            f"{result['gzip_ratio']:.1f}; cuts {result['cuts']}"
        )
        print(result["cpu"])
        print(f"ratio streamery/ConsumerPerformance MB/s: {ratio:.2f}")
        print(
            f"peak RSS {result['peak_rss'] / MiB:.0f} MiB with a memory limit of "
            f"{args.memory_limit_mb} MiB"
        )


if __name__ == "__main__":
    main()
