"""The pure parts of an Iceberg commit (no catalog, no files): where SQL warehouses keep their
statements, this loader keeps its types, schemas, row filters, the snapshot summary that
records a lease's batch ids, and the merge.

- **Types**: integers ``long``, numbers ``double``, booleans, strings, date-times
  ``timestamptz`` (microseconds), integers beyond 64 bits ``decimal(38, 0)``; objects
  ``struct``, arrays ``list`` (elements optional). A table made by another engine keeps its
  columns: ``int`` and ``float`` read as ``long`` and ``double`` (the commit widens them, the
  promotions Iceberg allows), any other type Skein does not write (``date``, ``map``, lists of
  lists, ...) is left alone and a value meeting it goes to a split column.
- **Exactly once**: every snapshot a lease commits carries its batch ids in its summary
  (``skein.batch-ids``); ``committed`` reads them back from the table's snapshots.
- **Merge**: per key the greatest ``_sdc_sequence`` wins (a tie goes to the later record), and a
  stored row is replaced only by a record whose sequence is not smaller; an append-only table
  (key ``__sdc_primary_key``) only gains keys it does not hold.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from pyiceberg.expressions import (
    AlwaysTrue,
    And,
    BooleanExpression,
    EqualTo,
    In,
    IsNull,
    LessThan,
    Or,
)
from pyiceberg.schema import Schema
from pyiceberg.table.metadata import TableMetadata
from pyiceberg.types import (
    BooleanType,
    DecimalType,
    DoubleType,
    FloatType,
    IcebergType,
    IntegerType,
    ListType,
    LongType,
    NestedField,
    StringType,
    StructType,
    TimestamptzType,
)

from services.loaders.bigquery.schema import Field, TableSchema
from services.loaders.core.system_columns import PRIMARY_KEY, SEQUENCE, TABLE_VERSION
from services.loaders.core.types import ColumnType

BATCH_IDS = "skein.batch-ids"  # snapshot summary: the lease's batch ids, comma-separated
LEASE = "skein.lease"  # ... and the lease that committed them (for an operator's eye)
KEY_COLUMNS = "skein.key-columns"  # table property: the table's key, a JSON list
NO_COMMIT_RETRIES = {"commit.retry.num-retries": "0"}  # the loader retries (see warehouse.py)
DECIMAL_DIGITS = 38

ICEBERG_TYPES: dict[ColumnType, IcebergType] = {
    ColumnType.BIGINT: LongType(),
    ColumnType.BOOLEAN: BooleanType(),
    ColumnType.NUMERIC: DecimalType(DECIMAL_DIGITS, 0),
    ColumnType.DOUBLE: DoubleType(),
    ColumnType.TEXT: StringType(),
    ColumnType.TIMESTAMP: TimestamptzType(),
}


def kind_of(kind: IcebergType) -> ColumnType:
    """The kind of value a stored column takes; ``VARIANT`` for a type Skein never writes
    (no value fits it, so values meeting it are split off)."""
    if isinstance(kind, LongType | IntegerType):
        return ColumnType.BIGINT
    if isinstance(kind, DoubleType | FloatType):
        return ColumnType.DOUBLE
    if isinstance(kind, BooleanType):
        return ColumnType.BOOLEAN
    if isinstance(kind, StringType):
        return ColumnType.TEXT
    if isinstance(kind, TimestamptzType):
        return ColumnType.TIMESTAMP
    if isinstance(kind, DecimalType) and kind.scale == 0:
        return ColumnType.NUMERIC
    return ColumnType.VARIANT


def field_of(name: str, kind: IcebergType) -> Field:
    if isinstance(kind, StructType):
        found = Field(name, None)
        for child in kind.fields:
            found.fields[child.name] = field_of(child.name, child.field_type)
        return found
    if isinstance(kind, ListType):
        element = kind.element_type
        if isinstance(element, StructType):
            found = field_of(name, element)
            found.repeated = True
            return found
        if isinstance(element, ListType | StructType) or not element.is_primitive:
            return Field(name, ColumnType.VARIANT, repeated=True)
        return Field(name, kind_of(element), repeated=True)
    if not kind.is_primitive:  # a map
        return Field(name, ColumnType.VARIANT)
    return Field(name, kind_of(kind))


def fields_of(name: str, schema: Schema) -> TableSchema:
    """A stored table's schema as the planner's fields (``bigquery.schema.TableSchema``)."""
    found = TableSchema(name, exists=True)
    for column in schema.fields:
        found.fields[column.name] = field_of(column.name, column.field_type)
    found.count = sum(1 for _ in _walk(found.fields.values()))
    return found


def _walk(fields: Iterable[Field]) -> Iterator[Field]:
    for f in fields:
        yield f
        yield from _walk(f.fields.values())


def iceberg_schema(table: TableSchema, existing: Schema | None) -> Schema:
    """The schema the table should have after this lease: the stored one (types it holds that
    Skein never writes kept as they are) with the lease's new fields, and ``int``/``float``
    columns as ``long``/``double``. Committed with ``union_by_name``, which adds what is new
    and widens in place; field ids here are placeholders (the catalog assigns its own)."""
    ids = itertools.count(1)
    stored = {f.name: f.field_type for f in existing.fields} if existing is not None else {}
    columns = [
        NestedField(next(ids), f.name, _type(f, stored.get(f.name), ids), required=False)
        for f in table.fields.values()
    ]
    return Schema(*columns)


def _type(f: Field, stored: IcebergType | None, ids: Iterator[int]) -> IcebergType:
    if f.kind is ColumnType.VARIANT:
        assert stored is not None, f"{f.name}: a type Skein does not write, but not stored"
        return stored
    if f.kind is None:
        inner = stored.element_type if isinstance(stored, ListType) else stored
        have = {c.name: c.field_type for c in inner.fields} if isinstance(inner, StructType) else {}
        struct = StructType(
            *(
                NestedField(next(ids), c.name, _type(c, have.get(c.name), ids), required=False)
                for c in f.fields.values()
            )
        )
        kind: IcebergType = struct
    else:
        kind = ICEBERG_TYPES[f.kind]
    if f.repeated:
        return ListType(next(ids), kind, element_required=False)
    return kind


# -- exactly once ------------------------------------------------------------------------------


def summary(batch_ids: Sequence[int], lease_token: str) -> dict[str, str]:
    """The snapshot summary properties of every snapshot a lease commits."""
    return {BATCH_IDS: ",".join(str(i) for i in batch_ids), LEASE: lease_token}


def committed(metadata: TableMetadata, batch_ids: Iterable[int]) -> set[int]:
    """Which of these batch ids a snapshot of the table records."""
    wanted = set(batch_ids)
    found: set[int] = set()
    for snapshot in metadata.snapshots:
        text = snapshot.summary.get(BATCH_IDS) if snapshot.summary is not None else None
        if text:
            found.update(wanted.intersection(int(i) for i in str(text).split(",")))
    return found


def key_of(properties: Mapping[str, str]) -> tuple[str, ...] | None:
    try:
        found = json.loads(properties.get(KEY_COLUMNS) or "null")
    except ValueError:
        return None
    return tuple(str(k) for k in found) if isinstance(found, list) else None


def key_property(key: tuple[str, ...]) -> dict[str, str]:
    return {KEY_COLUMNS: json.dumps(list(key))}


# -- row filters -------------------------------------------------------------------------------

Key = tuple[Any, ...]


def _literal(value: Any) -> Any:
    # pyiceberg binds a date-time given as ISO text to a timestamptz column
    return value.isoformat() if isinstance(value, datetime) else value


def key_filter(columns: tuple[str, ...], keys: Sequence[Key]) -> BooleanExpression:
    """Rows whose key is one of ``keys``: ``In`` on a one-column key, else a balanced ``Or`` of
    ``And``s (a left-deep one would recurse as deep as there are keys)."""
    assert keys, "a key filter needs at least one key"
    if len(columns) == 1:
        values = {_literal(k[0]) for k in keys}
        return (
            EqualTo(term=columns[0], value=next(iter(values)))
            if len(values) == 1
            else In(term=columns[0], literals=values)
        )
    terms: list[BooleanExpression] = []
    for key in keys:
        parts: list[BooleanExpression] = [
            EqualTo(term=c, value=_literal(v)) for c, v in zip(columns, key, strict=True)
        ]
        term = parts[0]
        for part in parts[1:]:
            term = And(term, part)
        terms.append(term)
    return _balanced(terms)


def _balanced(terms: list[BooleanExpression]) -> BooleanExpression:
    if len(terms) == 1:
        return terms[0]
    middle = len(terms) // 2
    return Or(_balanced(terms[:middle]), _balanced(terms[middle:]))


def older_versions(version: int, has_version_column: bool) -> BooleanExpression:
    """``activate_version``: the rows of any older table version (or of none)."""
    if not has_version_column:
        return AlwaysTrue()
    return Or(IsNull(term=TABLE_VERSION), LessThan(term=TABLE_VERSION, value=version))


# -- merge -------------------------------------------------------------------------------------


def key_values(row: Mapping[str, Any], columns: tuple[str, ...]) -> Key:
    return tuple(row.get(c) for c in columns)


def latest(rows: Iterable[dict[str, Any]], columns: tuple[str, ...]) -> dict[Key, dict[str, Any]]:
    """Per key, the record with the greatest sequence (rows in arrival order: a tie goes to the
    later one). Append-only keys are content hashes: the first copy stays."""
    best: dict[Key, dict[str, Any]] = {}
    append_only = columns == (PRIMARY_KEY,)
    for row in rows:
        key = key_values(row, columns)
        held = best.get(key)
        if held is None or (not append_only and row[SEQUENCE] >= held[SEQUENCE]):
            best[key] = row
    return best


def winners(
    incoming: Mapping[Key, dict[str, Any]], stored: Mapping[Key, int | None], append_only: bool
) -> list[dict[str, Any]]:
    """The incoming rows that replace or add to the stored ones (``stored``: each stored key's
    greatest sequence)."""
    out = []
    for key, row in incoming.items():
        if key not in stored:
            out.append(row)
        elif not append_only:
            held = stored[key]
            if held is None or held <= row[SEQUENCE]:
                out.append(row)
    return out


def stored_sequences(
    rows: Iterable[Mapping[str, Any]], columns: tuple[str, ...]
) -> dict[Key, int | None]:
    """Each stored key's greatest sequence, from scanned rows (keys and ``_sdc_sequence``)."""
    found: dict[Key, int | None] = {}
    for row in rows:
        key = key_values(row, columns)
        sequence = row.get(SEQUENCE)
        held = found.get(key)
        if key not in found or (sequence is not None and (held is None or sequence > held)):
            found[key] = sequence
    return found


def rekey_problem(rows: Iterable[Mapping[str, Any]], columns: tuple[str, ...]) -> str | None:
    """Why the stored rows cannot take the key ``columns`` (a null or duplicate key), or None."""
    seen: set[Key] = set()
    nulls = duplicates = 0
    for row in rows:
        key = key_values(row, columns)
        if any(v is None for v in key):
            nulls += 1
        elif key in seen:
            duplicates += 1
        else:
            seen.add(key)
    if nulls or duplicates:
        return f"{duplicates} duplicate and {nulls} null keys"
    return None


def exact_decimal(value: Any) -> Decimal:
    return Decimal(str(value))
