"""Prometheus exposition shared by the services, correct with several worker processes.

A launcher that runs N uvicorn workers calls ``use_multiprocess_dir`` before they start; each
worker's metrics then live in files there and ``exposition`` aggregates them.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    disable_created_metrics,
    generate_latest,
    multiprocess,
    values,
)
from prometheus_client.registry import Collector

from common.settings import SharedSettings

CONTENT_TYPE = "text/plain; version=0.0.4"

# No ``*_created`` series beside every counter, histogram and summary: nothing reads them, and
# with a ``client_id`` label they doubled each scrape (a loader with 2,000 clients' counters
# spent a quarter of its Python time answering Prometheus every 5 s).
disable_created_metrics()  # type: ignore[no-untyped-call]
OTHER_CLIENTS = "other"


def client_label(client_id: int) -> str:
    """The ``client_id`` label of a counter. Its values are bounded by the clients operators
    create (only authenticated clients are ever labelled), the same in every process and worker;
    Prometheus' per-job ``sample_limit`` is the hard backstop. Table names are never labels
    (unbounded, and customer-chosen); per-table state is ``skein status``'s job."""
    return str(client_id)


_max_clients: int | None = None


def stalest_clients(ages: Mapping[int, float], limit: int | None = None) -> dict[int, str]:
    """Labels for a scrape-time per-client gauge: the ``limit`` (SKEIN_METRICS_MAX_CLIENTS)
    clients with the largest ages keep their id, every other one is ``other`` (callers fold
    those: max of ages, sum of counts). Recomputed at every scrape, so the same in every process
    and never stuck: the clients an operator must see, the stalest, are always named."""
    global _max_clients
    if limit is None:
        if _max_clients is None:
            _max_clients = SharedSettings().metrics_max_clients
        limit = _max_clients
    named = set(sorted(ages, key=lambda c: ages[c], reverse=True)[:limit])
    return {c: (str(c) if c in named else OTHER_CLIENTS) for c in ages}


def use_multiprocess_dir(path: str, service: str) -> Path:
    """Empty (or create) the shared metrics directory and point prometheus-client at it."""
    directory = Path(path or tempfile.mkdtemp(prefix=f"skein-{service}-metrics-"))
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    # prometheus-client picks its value class when first imported, which was before this: a
    # single worker (uvicorn runs it in this process) would then keep its counters in memory,
    # and the scrape, which reads the directory, would never show them. Metrics made from here
    # on write to the directory, however many workers there are.
    values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]
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
