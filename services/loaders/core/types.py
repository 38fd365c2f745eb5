"""Column types, inferred from a JSON Schema or from JSON values, and their split suffixes.

Type changes never fail a load or lose a value: a value whose type differs from its column's
goes to a typed split column (``amount__st``), except for a safe widening done in place
(an integer column that meets an integer beyond 64 bits becomes numeric).
"""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Any


class ColumnType(Enum):
    BIGINT = "bi"
    BOOLEAN = "bo"
    NUMERIC = "de"
    DOUBLE = "do"
    TEXT = "st"
    TIMESTAMP = "ti"
    VARIANT = "va"  # a whole JSON object or array, kept nested (Snowflake VARIANT)

    @property
    def suffix(self) -> str:
        return self.value


INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def value_type(value: Any) -> ColumnType | None:
    """The type a JSON value needs (None for null; objects and arrays are de-nested)."""
    kind = type(value)
    if kind is str:
        return ColumnType.TEXT
    if kind is bool:
        return ColumnType.BOOLEAN
    if kind is int:
        return ColumnType.BIGINT if INT64_MIN <= value <= INT64_MAX else ColumnType.NUMERIC
    if kind is float:
        return ColumnType.DOUBLE
    return None


def schema_type(prop: dict[str, Any]) -> ColumnType | None:
    """The declared scalar type of a JSON Schema property, or None when not a plain scalar."""
    raw = prop.get("type")
    kinds = [raw] if isinstance(raw, str) else list(raw) if isinstance(raw, list) else []
    kinds = [k for k in kinds if k != "null"]
    if len(kinds) != 1:
        return None
    kind = kinds[0]
    if kind == "integer":
        return ColumnType.BIGINT
    if kind == "number":
        return ColumnType.DOUBLE
    if kind == "boolean":
        return ColumnType.BOOLEAN
    if kind == "string":
        return ColumnType.TIMESTAMP if prop.get("format") == "date-time" else ColumnType.TEXT
    return None


def fits(column: ColumnType, value: ColumnType) -> bool:
    """Can a value of type ``value`` be stored, exactly enough, in a ``column`` column?"""
    if column is value:
        return True
    if column is ColumnType.NUMERIC:
        return value is ColumnType.BIGINT
    if column is ColumnType.DOUBLE:
        return value is ColumnType.BIGINT  # a schema "number" column also holds integers
    return False


def widens_to(column: ColumnType, value: ColumnType) -> ColumnType | None:
    """A safe in-place widening of ``column`` that makes ``value`` fit, if there is one."""
    if column is ColumnType.BIGINT and value is ColumnType.NUMERIC:
        return ColumnType.NUMERIC
    return None


def parse_timestamp(value: str) -> datetime | None:
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None
