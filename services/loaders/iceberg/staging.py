"""A lease's records planned as BigQuery plans them (``bigquery/plan.LeasePlan``: the same
fields, splits, segments and rejections) and read back as typed rows per segment, the values
pyarrow writes to the table's columns: date-times as ``datetime``, integers beyond 64 bits as
``Decimal``.

The rows are held until the commit (a lost commit race applies them again against the table
as it then is), so a lease's size is bounded by ``SKEIN_LOADER_ICEBERG_MAX_BYTES``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson

from services.loaders.bigquery.names import BigQueryNames
from services.loaders.bigquery.plan import (
    REJECTED_REASON,
    REJECTED_RECORD,
    REJECTED_SEGMENT,
    ROW,
    SEGMENT,
    LeasePlan,
)
from services.loaders.bigquery.schema import Field, Placer, Rejected, TableSchema, timestamp_text
from services.loaders.core.denest import cell_type
from services.loaders.core.system_columns import BATCHED_AT
from services.loaders.core.types import ColumnType
from services.loaders.iceberg.statements import DECIMAL_DIGITS

NAMES = BigQueryNames()  # lowercase letters, digits and '_': a name every engine reads as is


class IcebergPlacer(Placer):
    """BigQuery's placement, with Iceberg's own refusals: an integer wider than
    ``decimal(38, 0)``; a NUL character in a string (every loader keeps those out)."""

    def _scalar(self, value: Any, declared: ColumnType | None) -> tuple[ColumnType, Any]:
        kind = cell_type(declared, value)
        assert kind is not None
        if type(value) is str and "\x00" in value:
            raise Rejected("a string holds a NUL character")
        if kind is ColumnType.NUMERIC and len(str(abs(value))) > DECIMAL_DIGITS:
            raise Rejected(f"an integer of more than {DECIMAL_DIGITS} digits")
        if kind is ColumnType.TIMESTAMP:
            text = timestamp_text(value)
            if text is None:
                return ColumnType.TEXT, value  # not a date-time after all: kept, as text
            return kind, text
        if kind is ColumnType.NUMERIC:
            return kind, str(value)
        if kind is ColumnType.DOUBLE:
            return kind, float(value)
        return kind, value


def lease_plan(table_source: str, schema: TableSchema) -> LeasePlan:
    plan = LeasePlan(table_source, NAMES, schema)
    plan.placer = IcebergPlacer(schema, NAMES)
    return plan


@dataclass
class Staged:
    """A planned lease's rows, typed, per segment number (arrival order), and its rejections."""

    segments: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (record, reason)


def read_back(plan: LeasePlan, batched_at: datetime | None = None) -> Staged:
    """The plan's spill file as typed rows (every row stamped ``_sdc_batched_at``)."""
    stamp = batched_at or datetime.now(UTC)
    staged = Staged()
    plan.file.seek(0)
    fields = plan.schema.fields
    for line in plan.file:
        raw = orjson.loads(line)
        segment = raw.pop(SEGMENT)
        raw.pop(ROW, None)
        if segment == REJECTED_SEGMENT:
            staged.rejected.append((raw[REJECTED_RECORD], raw[REJECTED_REASON]))
            continue
        row = typed_row(raw, fields)
        row[BATCHED_AT] = stamp
        staged.segments.setdefault(segment, []).append(row)
    return staged


def typed_row(raw: dict[str, Any], fields: dict[str, Field]) -> dict[str, Any]:
    return {name: _typed(fields[name], value) for name, value in raw.items() if value is not None}


def _typed(f: Field, value: Any) -> Any:
    if f.repeated:
        return [_one(f, v) for v in value]
    return _one(f, value)


def _one(f: Field, value: Any) -> Any:
    if value is None:
        return None
    if f.kind is None:
        return typed_row(value, f.fields)
    if f.kind is ColumnType.TIMESTAMP:
        return datetime.fromisoformat(value)
    if f.kind is ColumnType.NUMERIC:
        return Decimal(str(value))
    if f.kind is ColumnType.DOUBLE:
        return float(value)
    return value
