"""goccy/bigquery-emulator for the BigQuery loader's tests: built once per version (see
deploy/local/bigquery-emulator.sh), started on a free 127.0.0.1 port, stopped afterwards."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

from support.processes import stop_process
from support.stack import ROOT, RUN_DIR, listening, wait_for

SCRIPT = ROOT / "deploy" / "local" / "bigquery-emulator.sh"
PROJECT = "skein-test"


def binary() -> str:
    """The emulator's path; the first call on a machine builds it (several minutes)."""
    done = subprocess.run(
        [str(SCRIPT), "path"], capture_output=True, text=True, timeout=1800, check=False
    )
    assert done.returncode == 0, f"building the BigQuery emulator failed:\n{done.stderr}"
    return done.stdout.strip()


def _free_port_pair() -> int:
    """A free port whose successor is free too (HTTP on it, gRPC on the next)."""
    for _ in range(50):
        with socket.socket() as first:
            first.bind(("127.0.0.1", 0))
            port = int(first.getsockname()[1])
            with socket.socket() as second:
                try:
                    second.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
        return port
    raise AssertionError("no free port pair on 127.0.0.1")


@contextmanager
def running() -> Iterator[str]:
    """An emulator for the duration; yields its endpoint (``http://127.0.0.1:PORT``)."""
    path = binary()
    port = _free_port_pair()
    log = open(RUN_DIR / "logs" / "bigquery-emulator.log", "ab")  # noqa: SIM115
    proc = subprocess.Popen(
        [
            path,
            "--host=127.0.0.1",
            f"--port={port}",
            f"--grpc-port={port + 1}",
            f"--project={PROJECT}",
            "--log-level=warn",
        ],
        stdout=log,
        stderr=log,
    )
    try:
        wait_for(
            lambda: proc.poll() is not None or listening(port),
            timeout=60,
            what="the emulator's port",
        )
        assert proc.poll() is None, "the BigQuery emulator exited at start (see its log)"
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process(proc, 10)
        log.close()
