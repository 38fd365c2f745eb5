"""Prometheus exposition shared by the services, correct with several worker processes.

A launcher that runs N uvicorn workers calls ``use_multiprocess_dir`` before they start; each
worker's metrics then live in files there and ``exposition`` aggregates them.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest, multiprocess
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4"


def use_multiprocess_dir(path: str, service: str) -> Path:
    """Empty (or create) the shared metrics directory and point prometheus-client at it."""
    directory = Path(path or tempfile.mkdtemp(prefix=f"skein-{service}-metrics-"))
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    return directory


def exposition(extra: Iterable[Collector] = ()) -> bytes:
    """All metrics of this service: aggregated across processes when multiprocess mode is on;
    ``extra`` collectors (computed at scrape time, e.g. from the DB) are added once."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        for collector in extra:
            registry.register(collector)
        return generate_latest(registry)
    if not extra:
        return generate_latest(REGISTRY)
    registry = CollectorRegistry()
    registry.register(_Default())
    for collector in extra:
        registry.register(collector)
    return generate_latest(registry)


class _Default(Collector):
    def collect(self):  # type: ignore[no-untyped-def]
        return REGISTRY.collect()
