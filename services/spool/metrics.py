"""The spool's Prometheus metrics: counters in-process, queue depth read from the DB at scrape."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import Counter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from common.metrics import stalest_clients

LEASES = Counter("skein_spool_leases_total", "Leases granted", ["destination_type"])
LEASED_BATCHES = Counter(
    "skein_spool_leased_batches_total", "Batches handed out in leases", ["destination_type"]
)
ACKS = Counter("skein_spool_acked_batches_total", "Batches acknowledged loaded")
NACKS = Counter("skein_spool_nacked_batches_total", "Batches whose load failed", ["kind"])
REGISTERED = Counter("skein_spool_registered_batches_total", "New batches registered")
DEAD = Counter("skein_spool_dead_batches_total", "Batches parked as dead")
PURGED = Counter(
    "skein_spool_purged_batches_total", "Loaded batches whose S3 object retention deleted"
)


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
        client_depth = GaugeMetricFamily(
            "skein_spool_client_batches",
            "Open batches by client and state",
            labels=["client_id", "state"],
        )
        client_oldest = GaugeMetricFamily(
            "skein_spool_oldest_unloaded_age_seconds",
            "Age of the oldest record registered but not loaded (pending, leased, retrying or "
            "dead), by client",
            labels=["client_id"],
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
        # The stalest SKEIN_METRICS_MAX_CLIENTS clients keep their id; the rest fold into
        # "other" (sum of counts, max of ages).
        per_client: dict[int, float] = {}
        for row in stats.get("clients", ()):
            per_client[row["client_id"]] = max(
                per_client.get(row["client_id"], 0.0), row["oldest_age_s"]
            )
        names = stalest_clients(per_client)
        counts: dict[tuple[str, str], int] = {}
        client_ages: dict[str, float] = {}
        for row in stats.get("clients", ()):
            client = names[row["client_id"]]
            counts[client, row["state"]] = counts.get((client, row["state"]), 0) + row["batches"]
            client_ages[client] = max(client_ages.get(client, 0.0), row["oldest_age_s"])
        for (client, state), n in counts.items():
            client_depth.add_metric([client, state], n)
        for client, age in client_ages.items():
            client_oldest.add_metric([client], age)
        leases.add_metric([], stats["live_leases"])
        yield from (depth, size, oldest, client_depth, client_oldest, leases, up)
