"""The streamery's Prometheus metrics (one process: the default registry).

Per-client labels carry the client id only (see ``common.metrics``: counters by id, scrape-time
gauges for the stalest clients); never table names (unbounded, and they may hold anything).
Per-partition labels carry the partition number.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from common.metrics import stalest_clients

LAG = Gauge(
    "skein_streamery_lag_records",
    "Messages in the partition after the last committed offset (not yet durable in S3 + spool)",
    ["partition"],
)
COMMITTED = Gauge(
    "skein_streamery_committed_offset", "Last offset committed per partition", ["partition"]
)
BUFFERED_BYTES = Gauge("skein_streamery_buffered_bytes", "Record bytes in table buffers")
BUFFERED_RECORDS = Gauge("skein_streamery_buffered_records", "Records in table buffers")
BUFFERS = Gauge("skein_streamery_buffers", "Table buffers holding records")
IN_FLIGHT_BYTES = Gauge(
    "skein_streamery_in_flight_bytes", "Bytes of cut batches not yet registered (raw + gzip)"
)
IN_FLIGHT_BATCHES = Gauge("skein_streamery_in_flight_batches", "Cut batches not yet registered")
MEMORY_LIMIT = Gauge("skein_streamery_memory_limit_bytes", "Configured memory limit")
OLDEST_AGE = Gauge(
    "skein_streamery_oldest_buffered_age_seconds", "How long the oldest buffered record has waited"
)
PAUSED = Gauge(
    "skein_streamery_paused", "1 while consumption is paused (memory full or S3/spool failing)"
)
CUTS = Counter("skein_streamery_batches_cut_total", "Batches cut, by reason", ["reason"])
UPLOAD_SECONDS = Histogram(
    "skein_streamery_upload_duration_seconds",
    "PUT of a batch object, first attempt to success",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
REGISTER_SECONDS = Histogram(
    "skein_streamery_register_duration_seconds",
    "Registration with the spool, first attempt to success",
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
UPLOAD_FAILURES = Counter("skein_streamery_upload_failures_total", "Failed PUT attempts")
REGISTRATION_FAILURES = Counter(
    "skein_streamery_registration_failures_total",
    "Failed registration attempts: unavailable (transport/5xx), refused (other 4xx), "
    "conflict (409: another writer registered these offsets)",
    ["kind"],
)
BYTES_WRITTEN = Counter(
    "skein_streamery_bytes_written_total", "Object bytes uploaded (gzip)", ["client_id"]
)
RECORDS_REGISTERED = Counter(
    "skein_streamery_records_registered_total", "Records in registered batches", ["client_id"]
)
BATCHES_REGISTERED = Counter(
    "skein_streamery_batches_registered_total", "Batches registered with the spool"
)
RECORDS_READ = Counter("skein_streamery_records_read_total", "Records read from Kafka")
BYTES_READ = Counter("skein_streamery_bytes_read_total", "Message bytes read from Kafka")
SKIPPED = Counter(
    "skein_streamery_messages_skipped_total",
    "Messages at or below their table's high-water mark (registered before a restart)",
)
UNREADABLE = Counter(
    "skein_streamery_unreadable_messages_total",
    "Messages not in the records format, kept under _unreadable/ in S3",
)
COMMIT_FAILURES = Counter("skein_streamery_commit_failures_total", "Failed offset commits")


class OldestUnloaded(Collector):
    """``skein_streamery_oldest_unloaded_age_seconds{client_id}``: now minus the received-at of
    each client's oldest record still in this streamery (buffered, or cut and not yet registered
    with the spool). The main loop replaces the snapshot; the age is taken at scrape time."""

    def __init__(self) -> None:
        self._received: dict[str, float] = {}

    def update(self, oldest: dict[int, str]) -> None:
        """``oldest``: client id -> RFC 3339 received-at of its oldest record held here."""
        now = time.time()
        at: dict[int, float] = {}
        for client_id, stamp in oldest.items():
            try:
                at[client_id] = datetime.fromisoformat(stamp).timestamp()
            except ValueError:
                continue
        # The stalest SKEIN_METRICS_MAX_CLIENTS clients keep their id, the rest fold into "other".
        names = stalest_clients({c: now - t for c, t in at.items()})
        received: dict[str, float] = {}
        for client_id, t in at.items():
            label = names[client_id]
            received[label] = min(received.get(label, t), t)
        self._received = received

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "skein_streamery_oldest_unloaded_age_seconds",
            "Age of the oldest record held by the streamery (not yet in the spool), by client",
            labels=["client_id"],
        )
        now = time.time()
        for client, at in self._received.items():
            family.add_metric([client], max(0.0, now - at))
        yield family


OLDEST_UNLOADED = OldestUnloaded()
REGISTRY.register(OLDEST_UNLOADED)
