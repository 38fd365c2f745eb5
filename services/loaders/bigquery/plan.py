"""A lease's records as one newline-delimited JSON staging file, cut into segments (pure but for
the spill file).

As in the relational loaders, the records of one table are cut into *segments* wherever an
``activate_version`` closes one or the key names change; each segment is merged on its own, in
order. Every row is written to a temporary file (in memory up to 8 MiB, then disk) that is the
staging load job's source, so a lease of any size loads in bounded memory. Rejected records ride
in the same file (segment -1), so they reach ``_sdc_rejected`` in the same transaction.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from typing import IO, Any

import orjson

from common.wire import Header
from services.loaders.bigquery.names import BigQueryNames
from services.loaders.bigquery.schema import Field, Placer, Rejected, TableSchema, timestamp_text
from services.loaders.core import notes
from services.loaders.core.plan import activated_version, segment_for
from services.loaders.core.reader import Record
from services.loaders.core.system_columns import (
    EXTRACTED_AT,
    PRIMARY_KEY,
    RECEIVED_AT,
    SEQUENCE,
    TABLE_VERSION,
    append_only_key,
)
from services.loaders.core.types import ColumnType

BATCHED_AT = "_sdc_batched_at"
# Staging only: arrival order (ties go to the later record), segment, and rejected records.
ROW = "_sdc_row"
SEGMENT = "_sdc_segment"
REJECTED_RECORD = "_sdc_rejected_record"
REJECTED_REASON = "_sdc_rejected_reason"
REJECTED_SEGMENT = -1
SYSTEM_FIELDS = {
    RECEIVED_AT: ColumnType.TIMESTAMP,
    SEQUENCE: ColumnType.BIGINT,
    TABLE_VERSION: ColumnType.BIGINT,
    EXTRACTED_AT: ColumnType.TIMESTAMP,
    PRIMARY_KEY: ColumnType.TEXT,
    BATCHED_AT: ColumnType.TIMESTAMP,
}
STAGING_FIELDS = [
    Field(ROW, ColumnType.BIGINT),
    Field(SEGMENT, ColumnType.BIGINT),
    Field(REJECTED_RECORD, ColumnType.TEXT),
    Field(REJECTED_REASON, ColumnType.TEXT),
]


@dataclass
class Segment:
    number: int
    key_names: tuple[str, ...]  # source key names; empty = append-only
    key_columns: tuple[str, ...]  # their fields (PRIMARY_KEY for append-only)
    columns: set[str] = field(default_factory=set)  # top-level fields its rows write
    rows: int = 0
    activate_version: int | None = None


class LeasePlan:
    """Feed a lease's events in order; get the staging file, its segments, the grown schema."""

    def __init__(self, table_source: str, names: BigQueryNames, schema: TableSchema) -> None:
        self.table_source = table_source
        self.names = names
        self.schema = schema
        self.placer = Placer(schema, names)
        self.segments: list[Segment] = []
        self.rejected = 0
        # "r+b": the client library refuses to upload a file whose mode is not a read mode.
        self.file: IO[bytes] = tempfile.SpooledTemporaryFile(  # noqa: SIM115
            max_size=8 * 1024 * 1024, mode="r+b"
        )
        self._header: Header | None = None
        self._row = 0

    @property
    def staged_rows(self) -> int:
        return self._row

    def _segment(self) -> Segment:
        return segment_for(
            self.segments,
            self._header,
            self.names.column,
            lambda keys, columns: Segment(len(self.segments), keys, columns),
        )

    def feed(self, event: Header | Record) -> None:
        if isinstance(event, Header):
            self._header = event
            return
        if event.action == "activate_version":
            self._segment().activate_version = activated_version(self._header, event)
            return
        if event.action != "upsert" or not isinstance(event.data, dict):
            self._reject(event, f"unknown action {event.action!r}")
            return
        segment = self._segment()
        try:
            row = self._row_of(segment, event)
        except Rejected as exc:
            self._reject(event, str(exc))
            return
        segment.rows += 1
        segment.columns.update(row)
        self._write(row, segment.number)

    def _row_of(self, segment: Segment, record: Record) -> dict[str, Any]:
        header = self._header
        assert header is not None and record.data is not None
        data = record.data
        for source in segment.key_names:
            self.placer.check_key(data, source, header.schema)
        row = self.placer.row(data, header.schema)
        if not segment.key_names:
            row[PRIMARY_KEY] = append_only_key(self.table_source, record.sequence, data)
        system: dict[str, Any] = {
            RECEIVED_AT: timestamp_text(header.received_at),
            SEQUENCE: record.sequence,
        }
        if header.table_version is not None:
            system[TABLE_VERSION] = header.table_version
        if record.time_extracted:
            extracted = timestamp_text(record.time_extracted)
            if extracted is not None:
                system[EXTRACTED_AT] = extracted
        row.update(system)
        for name in (*system, PRIMARY_KEY, BATCHED_AT):
            if name not in self.schema.fields and (name in row or name == BATCHED_AT):
                self.placer.add(self.schema.fields, Field(name, SYSTEM_FIELDS[name]))
        return row

    def _write(self, row: dict[str, Any], segment: int) -> None:
        self._row += 1
        row[ROW] = self._row
        row[SEGMENT] = segment
        self.file.write(orjson.dumps(row) + b"\n")

    def _reject(self, record: Record, reason: str) -> None:
        self.rejected += 1
        notes.note_rejection(record.raw, reason)
        text = record.raw.decode("utf-8", "replace")
        self._write({REJECTED_RECORD: text, REJECTED_REASON: reason}, REJECTED_SEGMENT)

    def staging_fields(self) -> list[dict[str, Any]]:
        """The staging table's schema: the table's (as grown) plus the staging columns."""
        return self.schema.api() + [f.api() for f in STAGING_FIELDS]

    def close(self) -> None:
        self.file.close()
