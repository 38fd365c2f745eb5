"""A BigQuery table's fields, and where each value of a record goes (pure; no driver).

Nesting is kept: an object becomes a RECORD field, an array a REPEATED field (of RECORDs for
objects, of the element type for scalars). BigQuery has no arrays of arrays, so an inner array
(and a scalar inside an array of objects) is wrapped as a RECORD with one ``value`` field.

Type changes never fail a load nor lose a value: a value whose type differs from its field's
goes to a sibling field ``<name>__<suffix>`` (``__bo __fl __it __nu __st __ti``); an object or
array meeting a scalar field (or the reverse) is kept as JSON text in ``<name>__st``. Fields are
only ever added, as NULLABLE (or REPEATED), which BigQuery allows on an existing table.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from services.loaders.bigquery.names import BigQueryNames
from services.loaders.core.denest import cell_type, declared, items, properties
from services.loaders.core.names import SEPARATOR
from services.loaders.core.types import ColumnType, fits, parse_timestamp

BQ_TYPES = {
    ColumnType.BIGINT: "INTEGER",
    ColumnType.BOOLEAN: "BOOLEAN",
    ColumnType.NUMERIC: "BIGNUMERIC",  # integers beyond 64 bits, exactly (76 digits)
    ColumnType.DOUBLE: "FLOAT",
    ColumnType.TEXT: "STRING",
    ColumnType.TIMESTAMP: "TIMESTAMP",
}
FROM_BQ = {
    "INTEGER": ColumnType.BIGINT,
    "INT64": ColumnType.BIGINT,
    "BOOLEAN": ColumnType.BOOLEAN,
    "BOOL": ColumnType.BOOLEAN,
    "BIGNUMERIC": ColumnType.NUMERIC,
    "NUMERIC": ColumnType.NUMERIC,
    "FLOAT": ColumnType.DOUBLE,
    "FLOAT64": ColumnType.DOUBLE,
    "STRING": ColumnType.TEXT,
    "TIMESTAMP": ColumnType.TIMESTAMP,
}
SUFFIXES = {
    ColumnType.BIGINT: "it",
    ColumnType.BOOLEAN: "bo",
    ColumnType.NUMERIC: "nu",
    ColumnType.DOUBLE: "fl",
    ColumnType.TEXT: "st",
    ColumnType.TIMESTAMP: "ti",
}
RECORD = "RECORD"
WRAPPED = "value"  # the one field of a RECORD that wraps an inner array or a stray scalar


class Rejected(ValueError):
    """This record cannot be loaded (the reason goes to ``_sdc_rejected``)."""


@dataclass
class Field:
    name: str
    kind: ColumnType | None  # None: a RECORD
    repeated: bool = False
    fields: dict[str, Field] = field(default_factory=dict)  # a RECORD's fields, in order

    @property
    def type_name(self) -> str:
        return RECORD if self.kind is None else BQ_TYPES[self.kind]

    def api(self) -> dict[str, Any]:
        """The field as the BigQuery REST API spells it (``TableFieldSchema``)."""
        out: dict[str, Any] = {
            "name": self.name,
            "type": self.type_name,
            "mode": "REPEATED" if self.repeated else "NULLABLE",
        }
        if self.kind is None:
            out["fields"] = [f.api() for f in self.fields.values()]
        return out

    @classmethod
    def from_api(cls, raw: dict[str, Any]) -> Field:
        kind = None if raw["type"] in (RECORD, "STRUCT") else FROM_BQ.get(raw["type"])
        if kind is None and raw["type"] not in (RECORD, "STRUCT"):
            kind = ColumnType.TEXT  # a type Skein never creates (DATE, JSON ...): keep apart
        found = cls(raw["name"], kind, raw.get("mode") == "REPEATED")
        for sub in raw.get("fields") or []:
            child = cls.from_api(sub)
            found.fields[child.name] = child
        return found


@dataclass
class TableSchema:
    """A table's fields: the existing ones and those a lease adds."""

    name: str
    fields: dict[str, Field] = field(default_factory=dict)
    exists: bool = False
    added: bool = False  # fields were added since it was read
    count: int = 0  # fields at every depth, against BigQuery's limit

    @classmethod
    def from_api(cls, name: str, fields: list[dict[str, Any]]) -> TableSchema:
        found = cls(name, exists=True)
        for raw in fields:
            child = Field.from_api(raw)
            found.fields[child.name] = child
        found.count = _count(found.fields)
        return found

    def api(self) -> list[dict[str, Any]]:
        return [f.api() for f in self.fields.values()]


def _count(fields: dict[str, Field]) -> int:
    return sum(1 + _count(f.fields) for f in fields.values())


def timestamp_text(value: str) -> str | None:
    """An RFC 3339 / ISO 8601 date-time as BigQuery's canonical UTC form, or None."""
    parsed = parse_timestamp(value)
    if parsed is None:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f+00:00")


def json_value(kind: ColumnType, value: Any) -> Any:
    """A value as newline-delimited JSON carries it to a field of ``kind``."""
    if kind is ColumnType.NUMERIC:
        return str(value)  # exact; a JSON number would pass through a double
    if kind is ColumnType.DOUBLE:
        return float(value)
    return value


def split_name(base: str, kind: ColumnType) -> str:
    return f"{base}{SEPARATOR}{SUFFIXES[kind]}"


class Placer:
    """Turns records into rows of one table's schema, adding the fields they need."""

    def __init__(self, schema: TableSchema, names: BigQueryNames) -> None:
        self.schema = schema
        self.names = names
        self._top_level: set[str] = set()  # top-level fields written (for MERGE's UPDATE SET)

    @property
    def written(self) -> set[str]:
        return self._top_level

    def row(self, data: dict[str, Any], schema: dict[str, Any] | None) -> dict[str, Any]:
        out = self._object(self.schema.fields, data, properties(schema))
        self._top_level.update(out)
        return out

    def check_key(self, data: dict[str, Any], source: str, schema: dict[str, Any] | None) -> None:
        """A key property must be present, a scalar, and keep its field's type."""
        value = data.get(source)
        if value is None:
            raise Rejected(f"missing key property {source}")
        if isinstance(value, dict | list):
            raise Rejected(f"key property {source} is not a scalar")
        props = properties(schema)
        kind = cell_type(declared(props.get(source)) if props else None, value)
        assert kind is not None
        if kind is ColumnType.TIMESTAMP and timestamp_text(value) is None:
            kind = ColumnType.TEXT
        column = self.names.column(source)
        current = self.schema.fields.get(column)
        if current is not None and (current.repeated or current.kind is not kind):
            was = "RECORD" if current.kind is None else current.kind.name
            raise Rejected(f"key property {source} changed type from {was} to {kind.name}")

    # -- placing values
    def add(self, fields: dict[str, Field], new: Field) -> Field:
        # A new RECORD's own fields were counted as they were added to it.
        if self.schema.count + 1 > self.names.max_columns:
            raise Rejected(
                f"table {self.schema.name} would exceed BigQuery's limit of "
                f"{self.names.max_columns} fields"
            )
        fields[new.name] = new
        self.schema.count += 1
        self.schema.added = True
        return new

    def _object(
        self, fields: dict[str, Field], data: dict[str, Any], props: dict[str, Any] | None
    ) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in data.items():
            if value is not None:
                self._put(fields, out, key, value, props.get(key) if props else None)
        return out

    def _put(
        self, fields: dict[str, Field], out: dict[str, Any], key: str, value: Any, prop: Any
    ) -> None:
        base = self.names.column(key)
        shape = type(value)
        current = fields.get(base)
        if shape is dict:
            if current is None:
                record = Field(base, None)
                sub = self._object(record.fields, value, properties(prop))
                if record.fields:  # a RECORD needs at least one field
                    self.add(fields, record)
                    out[base] = sub
            elif current.kind is None and not current.repeated:
                out[base] = self._object(current.fields, value, properties(prop))
            else:
                self._text(fields, out, base, value)
            return
        if shape is list:
            if current is None:
                self._new_array(fields, out, base, value, items(prop))
            elif current.repeated:
                self._array(fields, out, current, value, items(prop))
            else:
                self._text(fields, out, base, value)
            return
        kind, rendered = self._scalar(value, declared(prop))
        if current is None:
            self.add(fields, Field(base, kind))
            out[base] = rendered
        elif current.kind is not None and not current.repeated and fits(current.kind, kind):
            out[base] = json_value(current.kind, value) if current.kind is not kind else rendered
        else:
            self._split(fields, out, base, kind, rendered)

    def _scalar(self, value: Any, declared: ColumnType | None) -> tuple[ColumnType, Any]:
        kind = cell_type(declared, value)
        assert kind is not None
        if type(value) is str and "\x00" in value:
            # BigQuery's JSON loads refuse it; keep the record whole in _sdc_rejected instead.
            raise Rejected("a string holds a NUL character, which BigQuery loads refuse")
        if kind is ColumnType.TIMESTAMP:
            text = timestamp_text(value)
            if text is None:
                return ColumnType.TEXT, value  # not a date-time after all: kept, as text
            return kind, text
        return kind, json_value(kind, value)

    def _split(
        self,
        fields: dict[str, Field],
        out: dict[str, Any],
        base: str,
        kind: ColumnType,
        rendered: Any,
        repeated: bool = False,
    ) -> None:
        name = split_name(base, kind)
        current = fields.get(name)
        if current is None:
            self.add(fields, Field(name, kind, repeated))
        elif current.kind is not kind or current.repeated != repeated:
            raise Rejected(f"field {name} exists with another type; cannot hold this value")
        if repeated:
            out.setdefault(name, []).append(rendered)
        else:
            out[name] = rendered

    def _text(self, fields: dict[str, Field], out: dict[str, Any], base: str, value: Any) -> None:
        """An object or array where its field holds something else: kept as JSON text."""
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
        self._split(fields, out, base, ColumnType.TEXT, text)

    def _new_array(
        self, fields: dict[str, Field], out: dict[str, Any], base: str, values: list[Any], item: Any
    ) -> None:
        first = next((v for v in values if v is not None), None)
        if first is None:
            return  # nothing to infer a type from; an empty array is as good as none
        if isinstance(first, dict | list):
            record = Field(base, None, repeated=True)
            rows = self._records(record, values, item)
            if record.fields:
                self.add(fields, record)
                out[base] = rows
            return
        kind, _ = self._scalar(first, declared(item))
        self.add(fields, Field(base, kind, repeated=True))
        self._array(fields, out, fields[base], values, item)

    def _array(
        self,
        fields: dict[str, Field],
        out: dict[str, Any],
        array: Field,
        values: list[Any],
        item: Any,
    ) -> None:
        if array.kind is None:
            out[array.name] = self._records(array, values, item)
            return
        kept: list[Any] = []
        out[array.name] = kept
        for value in values:
            if value is None:
                continue  # BigQuery arrays cannot hold NULL
            if isinstance(value, dict | list):
                text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
                self._split(fields, out, array.name, ColumnType.TEXT, text, repeated=True)
                continue
            kind, rendered = self._scalar(value, declared(item))
            if fits(array.kind, kind):
                kept.append(json_value(array.kind, value) if array.kind is not kind else rendered)
            else:
                self._split(fields, out, array.name, kind, rendered, repeated=True)

    def _records(self, record: Field, values: list[Any], item: Any) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        for value in values:
            if value is None:
                continue
            if isinstance(value, dict):
                rows.append(self._object(record.fields, value, properties(item)))
            else:  # an inner array, or a scalar among objects: wrapped
                rows.append(self._object(record.fields, {WRAPPED: value}, {WRAPPED: item}))
        return rows


def now_text() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f+00:00")
