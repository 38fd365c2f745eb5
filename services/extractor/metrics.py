"""The extractor's Prometheus metrics (one process: the default registry).

Labels carry the client id and the integration's name (operators choose names, bounded by the
number of integrations), never stream or table names.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import datetime

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

RUNS = Counter(
    "skein_extractor_runs_total",
    "Runs ended, by status (succeeded, failed)",
    ["client_id", "integration", "status"],
)
RUNNING = Gauge(
    "skein_extractor_runs_running", "Runs in progress in this process", ["client_id", "integration"]
)
RECORDS = Counter(
    "skein_extractor_records_total",
    "Records extracted and acknowledged by the gate",
    ["client_id", "integration"],
)
DURATION = Histogram(  # no client_id: per-client labels are never on histograms
    "skein_extractor_run_duration_seconds",
    "Run duration, start to end, by status",
    ["integration", "status"],
    buckets=(1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200),
)
STATES_SAVED = Counter(
    "skein_extractor_states_saved_total", "Singer STATEs saved", ["client_id", "integration"]
)
TAP_INSTALLS = Counter(
    "skein_extractor_tap_installs_total", "Tap virtualenvs installed, by result", ["result"]
)

Row = tuple[int, str, datetime | None, int, bool]


class IntegrationHealth(Collector):
    """Read from the control DB at scrape time, so they are right after a restart too."""

    def __init__(self, rows: Callable[[], list[Row]]) -> None:
        self._rows = rows

    def collect(self) -> Iterator[GaugeMetricFamily]:
        since = GaugeMetricFamily(
            "skein_extractor_seconds_since_last_success",
            "Seconds since the integration's last successful run (absent before the first)",
            labels=["client_id", "integration"],
        )
        failures = GaugeMetricFamily(
            "skein_extractor_consecutive_failures",
            "Failed runs since the last success",
            labels=["client_id", "integration"],
        )
        paused = GaugeMetricFamily(
            "skein_extractor_paused",
            "1 while the integration is paused",
            labels=["client_id", "integration"],
        )
        up = GaugeMetricFamily("skein_extractor_control_db_up", "1 if the control DB answered")
        try:
            rows = self._rows()
        except Exception:
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        now = time.time()
        for client_id, name, last_success, failed, is_paused in rows:
            labels = [str(client_id), name]
            if last_success is not None:
                since.add_metric(labels, max(0.0, now - last_success.timestamp()))
            failures.add_metric(labels, failed)
            paused.add_metric(labels, 1 if is_paused else 0)
        yield since
        yield failures
        yield paused
        yield up
