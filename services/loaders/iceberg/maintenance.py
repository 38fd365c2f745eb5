"""Table maintenance (``skein lake compact`` / ``skein lake expire``), safe while the loader
runs: each is one catalog commit per table, and a commit that loses a race to the loader fails
(the catalog's compare-and-swap) without changing anything; run it again.

- **compact**: a loader that commits every few seconds adds a few small files per commit. The
  data files below ``small_bytes`` (without delete files) are read and written again as few
  large files, in one ``overwrite`` snapshot that removes exactly those files: the rows and
  their order in time are the same, only the files change.
- **expire**: snapshots older than a number of days go from the table's metadata (the current
  one and every branch or tag head always stay): time travel no longer reaches them. (The data
  files only they referenced stay in S3: pyiceberg 0.12 does not delete them; an orphan-file
  clean-up of another engine can.) The loader finds a lease's batch ids in recent
  snapshots (a retry after a crash comes within minutes), so at least a day is kept.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from pyiceberg.exceptions import CommitFailedException
from pyiceberg.expressions import AlwaysTrue
from pyiceberg.io.pyarrow import ArrowScan, _dataframe_to_data_files
from pyiceberg.table import Table

from services.loaders.iceberg.connection import Session
from services.loaders.iceberg.staging import NAMES
from services.loaders.iceberg.tables import find

SMALL_BYTES = 64 * 1024 * 1024
MIN_EXPIRE_DAYS = 1
MAINTENANCE = "skein.maintenance"  # snapshot summary: which command made it


def tables_of(session: Session, table: str | None) -> list[Table]:
    """The namespace's tables, or the one named (a Stitch table name, mapped as the loader
    maps it; the loader's own ``_sdc_rejected`` by that name)."""
    if table is not None:
        name = table if table.startswith("_sdc") else NAMES.table(table)
        found = find(session, name)
        if found is None:
            raise ValueError(f"no table {name} in namespace {session.target.namespace}")
        return [found]
    out = []
    for identifier in sorted(session.catalog.list_tables(session.namespace)):
        loaded = find(session, identifier[-1])
        if loaded is not None:
            out.append(loaded)
    return out


def compact(table: Table, small_bytes: int = SMALL_BYTES) -> dict[str, Any]:
    """Rewrite the table's small data files as few large ones, in one commit."""
    name = table.name()[-1]
    tasks = list(table.scan().plan_files())
    small = [t for t in tasks if t.file.file_size_in_bytes < small_bytes and not t.delete_files]
    report: dict[str, Any] = {"table": name, "files": len(tasks), "rewritten": 0, "written": 0}
    if len(small) < 2:
        return report
    metadata = table.metadata
    rows = ArrowScan(
        table_metadata=metadata,
        io=table.io,
        projected_schema=table.schema(),
        row_filter=AlwaysTrue(),
    ).to_table(tasks=small)
    tx = table.transaction()
    written = 0
    with tx.update_snapshot(snapshot_properties={MAINTENANCE: "compact"}).overwrite() as change:
        for task in small:
            change.delete_data_file(task.file)
        for data_file in _dataframe_to_data_files(
            table_metadata=tx.table_metadata, df=rows, io=table.io, write_uuid=change.commit_uuid
        ):
            change.append_data_file(data_file)
            written += 1
    try:
        tx.commit_transaction()
    except CommitFailedException:
        report["error"] = "another writer committed meanwhile; nothing changed, run it again"
        return report
    report.update(rewritten=len(small), written=written, rows=rows.num_rows)
    return report


def expire(table: Table, older_than_days: int, now: datetime | None = None) -> dict[str, Any]:
    """Expire the table's snapshots older than ``older_than_days`` (never the current one)."""
    if older_than_days < MIN_EXPIRE_DAYS:
        raise ValueError(
            f"--older-than-days must be at least {MIN_EXPIRE_DAYS}: the loader looks for a "
            "retried lease's batch ids in recent snapshots"
        )
    cutoff = (now or datetime.now(UTC)) - timedelta(days=older_than_days)
    before = len(table.metadata.snapshots)
    report: dict[str, Any] = {"table": table.name()[-1], "snapshots": before, "expired": 0}
    old = [s for s in table.metadata.snapshots if s.timestamp_ms < cutoff.timestamp() * 1000]
    if not old:
        return report
    try:
        table.maintenance.expire_snapshots().older_than(cutoff).commit()
    except CommitFailedException:
        report["error"] = "another writer committed meanwhile; nothing changed, run it again"
        return report
    table.refresh()
    report["expired"] = before - len(table.metadata.snapshots)
    return report
