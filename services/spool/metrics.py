"""The spool's Prometheus metrics: counters in-process, queue depth read from the DB at scrape."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import Counter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

LEASES = Counter("skein_spool_leases_total", "Leases granted", ["destination_type"])
LEASED_BATCHES = Counter(
    "skein_spool_leased_batches_total", "Batches handed out in leases", ["destination_type"]
)
ACKS = Counter("skein_spool_acked_batches_total", "Batches acknowledged loaded")
NACKS = Counter("skein_spool_nacked_batches_total", "Batches whose load failed", ["kind"])
REGISTERED = Counter("skein_spool_registered_batches_total", "New batches registered")
DEAD = Counter("skein_spool_dead_batches_total", "Batches parked as dead")


class QueueCollector(Collector):
    """Depth by state and destination type and the oldest waiting record's age, from the DB."""

    def __init__(self, read_stats: Callable[[], dict[str, Any]]) -> None:
        self._read_stats = read_stats

    def collect(self) -> Iterator[GaugeMetricFamily]:
        depth = GaugeMetricFamily(
            "skein_spool_batches", "Open batches by state", labels=["destination_type", "state"]
        )
        size = GaugeMetricFamily(
            "skein_spool_bytes", "Open batch bytes by state", labels=["destination_type", "state"]
        )
        oldest = GaugeMetricFamily(
            "skein_spool_oldest_pending_age_seconds",
            "Age of the oldest record waiting to load (pending, leased or retrying)",
            labels=["destination_type"],
        )
        leases = GaugeMetricFamily("skein_spool_live_leases", "Tables currently leased")
        up = GaugeMetricFamily("skein_spool_db_up", "1 when the control DB answered this scrape")
        try:
            stats = self._read_stats()
        except Exception:
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        ages: dict[str, float] = {}
        for row in stats["open"]:
            labels = [row["destination_type"], row["state"]]
            depth.add_metric(labels, row["batches"])
            size.add_metric(labels, row["bytes"])
            if row["state"] != "dead":
                ages[row["destination_type"]] = max(
                    ages.get(row["destination_type"], 0.0), row["oldest_age_s"]
                )
        for destination, age in ages.items():
            oldest.add_metric([destination], age)
        leases.add_metric([], stats["live_leases"])
        yield from (depth, size, oldest, leases, up)
