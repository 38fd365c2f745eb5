"""What a native hot path would buy (decision 12): the gate's and the Postgres loader's
per-record Python work against Rust doing the same, or less, on the same bytes, in one run.

    .venv/bin/python bench/native_probe.py [--repeats 3]

Needs cargo (crates.io): ``bench/native_probe/`` is built into ``~/.cache/skein/native-probe``.
No stack: everything runs in this process and the probe's.

- Gate, per 1,000-record ``/batch`` body (the e2e bench's records): Python is ``parse_json`` +
  ``batch_tables`` with the body's compiled schema + ``encode_messages``, what a gate worker does
  per request without HTTP and Kafka. Rust (``gate-serde``) parses with serde_json, checks the
  envelope and each record, validates each with the ``jsonschema`` crate and writes each line;
  ``gate-sonic-parse`` is the body parsed by sonic-rs alone (a tape parser: the ceiling), and
  ``gate-raw-envelope`` the envelope with each record's data left unparsed.
- Loader, per record line: Python is ``events`` + ``PlanBuilder`` as the Postgres loader builds
  it (compiled plans, plain records' rendering). Rust parses each line with sonic-rs and
  renders its fields as CSV (objects flattened), without the plans' shape, range and timestamp
  checks: a floor, not a port.

Each figure is the median of ``--repeats`` runs (the probe's each in a fresh process), in
wall-clock time of one thread's loop on both sides: run it on an otherwise idle machine. The
probe runs with glibc's trim and mmap thresholds raised, as a long-running process's heap
behaves; a fresh heap hands its memory back to the kernel on every free.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # support/ (not installed)
from bench_records import make_record
from e2e_bench import orders_body

from common import runtime
from common.wire import Header, dumps, encode_messages
from services.gate import body as gate_body
from services.gate import records as gate_records
from services.gate.schemas import Prepared, compile_to_blob, load_validator
from services.gate.settings import GateSettings
from services.loaders.core.reader import events
from services.loaders.postgres.warehouse import plan_builder

PROBE = Path(__file__).resolve().parent / "native_probe"
TARGET = Path.home() / ".cache" / "skein" / "native-probe"
BATCHED_AT = '"2026-11-26T12:00:00.123456+00:00"'
WARM_HEAP = "glibc.malloc.trim_threshold=268435456:glibc.malloc.mmap_threshold=33554432"


def python_gate_ms(raw: bytes, iterations: int) -> float:
    settings = GateSettings(_env_file=None)
    schema = gate_body.parse_json(raw, settings.max_depth)["schema"]
    validator = Prepared(load_validator(compile_to_blob(schema)))
    ctx = gate_records.RequestContext(1, "2026-11-26T10:00:00.000000Z", "r", False)
    limits = gate_records.Limits()
    began = time.perf_counter()
    for _ in range(iterations):
        parsed = gate_body.parse_json(raw, settings.max_depth)
        for table in gate_records.batch_tables(parsed, ctx, limits, validator):
            list(encode_messages(table, settings.message_max_bytes, 8 << 20))
    return (time.perf_counter() - began) * 1e3 / iterations


def python_loader_us(lines: list[bytes]) -> float:
    builder = plan_builder("orders", {}, BATCHED_AT)
    try:
        began = time.perf_counter()
        for event in events(lines):
            builder.feed(event)
        return (time.perf_counter() - began) * 1e6 / (len(lines) - 1)
    finally:
        builder.close()


def probe(measurement: str, path: Path, count: int) -> float:
    out = subprocess.run(
        [TARGET / "release" / "native-probe", measurement, str(path), str(count)],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "GLIBC_TUNABLES": WARM_HEAP},
    ).stdout.split()
    return float(out[1])


def probe_ms(measurement: str, body: Path) -> float:
    return probe(measurement, body, 1000) / 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--records", type=int, default=100_000, help="loader lines")
    args = parser.parse_args()
    subprocess.run(
        ["cargo", "build", "--quiet", "--release", "--locked", "--target-dir", str(TARGET)],
        cwd=PROBE,
        check=True,
    )
    runtime.tune_gc()  # as the gate's workers and the loaders do
    rng = random.Random(1)
    records = [make_record(i, rng) for i in range(max(1_000, args.records))]
    raw = orders_body(
        [{"action": "upsert", "sequence": i, "data": d} for i, d in enumerate(records[:1000])]
    )
    schema = {"properties": {"id": {"type": "integer"}}}
    header = Header(1, "orders", ("id",), schema, None, "2026-11-26T10:00:00.000000Z", "r", "batch")
    lines = [header.encode()] + [
        dumps({"action": "upsert", "sequence": i, "data": d}) for i, d in enumerate(records)
    ]
    with tempfile.TemporaryDirectory() as tmp:
        body_path, lines_path = Path(tmp, "body.json"), Path(tmp, "lines.ndjson")
        body_path.write_bytes(raw)
        lines_path.write_bytes(b"\n".join(lines[1:]) + b"\n")

        def median(measure: Callable[[], float]) -> float:
            return statistics.median(measure() for _ in range(args.repeats))

        py_gate = median(lambda: python_gate_ms(raw, 300))
        rust = {
            m: median(partial(probe_ms, m, body_path))
            for m in ("gate-serde", "gate-sonic-parse", "gate-raw-envelope")
        }
        py_loader = median(lambda: python_loader_us(lines))
        rust_loader = median(lambda: probe("loader", lines_path, 5))
    print(
        f"gate, one {len(raw) / 1024:.0f} KiB body of 1,000 records, "
        "ms per request (wall, one thread):"
    )
    print(f"  Python (parse_json + batch_tables + encode_messages)  {py_gate:6.2f}")
    print(
        f"  Rust, serde_json + jsonschema, the same work          {rust['gate-serde']:6.2f}"
        f"  ratio {rust['gate-serde'] / py_gate:.2f}"
    )
    print(
        f"  Rust, the parse alone with sonic-rs (ceiling)         {rust['gate-sonic-parse']:6.2f}"
        f"  ratio {rust['gate-sonic-parse'] / py_gate:.2f}"
    )
    print(
        f"  Rust, the envelope with each data unparsed            {rust['gate-raw-envelope']:6.2f}"
    )
    print(f"loader, {len(lines) - 1:,} record lines, microseconds per record (wall, one thread):")
    print(f"  Python (events + PlanBuilder, compiled plans)         {py_loader:6.2f}")
    print(
        f"  Rust, sonic-rs parse + CSV render (no checks: floor)  {rust_loader:6.2f}"
        f"  ratio {rust_loader / py_loader:.2f}"
    )


if __name__ == "__main__":
    main()
