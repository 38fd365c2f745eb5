"""The gate's Prometheus metrics. Labels carry route templates, never raw paths (webhook URLs
hold tokens). With several worker processes, prometheus-client's multiprocess mode aggregates."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

REQUESTS = Counter(
    "skein_gate_requests_total", "HTTP requests by route template and status", ["route", "status"]
)
REQUEST_SECONDS = Histogram(
    "skein_gate_request_duration_seconds",
    "HTTP request latency by route template",
    ["route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
IN_FLIGHT = Gauge(
    "skein_gate_requests_in_flight", "Requests being handled", multiprocess_mode="livesum"
)
# client_id: bounded by common.metrics.client_label.
RECORDS = Counter(
    "skein_gate_records_accepted_total",
    "Records acknowledged by Kafka",
    ["endpoint", "client_id"],
)
BYTES = Counter(
    "skein_gate_bytes_accepted_total",
    "Record bytes acknowledged by Kafka",
    ["endpoint", "client_id"],
)
PRODUCE_SECONDS = Histogram(
    "skein_gate_produce_duration_seconds",
    "Time from first produce to the last delivery report of a request",
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
PRODUCE_FAILURES = Counter(
    "skein_gate_produce_failures_total", "Requests answered 503 because Kafka did not acknowledge"
)
SCHEMA_COMPILES = Counter("skein_gate_schema_compiles_total", "Client schemas compiled")
