"""The loader's Prometheus metrics, the same for every warehouse type (labelled by it).

Counted by the lease loop (``runner``) and the lease watch (``watch``); their names and labels
are what the alerts and the dashboard read (``deploy/prometheus``)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

# client_id labels are bounded by common.metrics.client_label; tables are never labels.
LOADS = Counter(
    "skein_loader_loads_total",
    "Lease loads by outcome (ok, transient, permanent)",
    ["destination_type", "client_id", "result"],
)
ROWS = Counter("skein_loader_rows_total", "Parent rows written", ["destination_type", "client_id"])
BATCHES = Counter("skein_loader_batches_total", "Batches loaded", ["destination_type"])
REJECTED = Counter(
    "skein_loader_rejected_records_total",
    "Records sent to _sdc_rejected",
    ["destination_type", "client_id"],
)
SCHEMA_CHANGES = Counter(
    "skein_loader_schema_changes_total",
    "Schema changes loads made (tables created, columns added, widened or split)",
    ["destination_type", "client_id"],
)
LOAD_SECONDS = Histogram(
    "skein_loader_load_duration_seconds",
    "Time to load one lease",
    ["destination_type"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
FRESHNESS = Histogram(
    "skein_loader_freshness_seconds",
    "Loaded at minus received at (of the oldest record of each loaded batch)",
    ["destination_type"],
    buckets=(1, 2, 5, 10, 15, 30, 60, 120, 300, 900, 3600),
)
SESSIONS = Gauge(
    "skein_loader_warehouse_sessions",
    "Warehouse sessions this loader process holds open (at most its MAX_CONNECTIONS)",
    ["destination_type"],
)
OPENED = Counter(
    "skein_loader_warehouse_sessions_opened_total",
    "Warehouse sessions opened",
    ["destination_type"],
)
STALLED = Counter(
    "skein_loader_stalled_loads_total",
    "Loads that ran past STALLED_LOAD_S and gave their worker slot to other work",
    ["destination_type"],
)
