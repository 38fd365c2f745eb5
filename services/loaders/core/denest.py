"""De-nesting a record into rows (pure): objects become ``parent__child`` columns; arrays
become subtables ``table__field`` whose rows carry the parent's key (``_sdc_source_key_<k>``)
and their position (``_sdc_level_<n>_id``), Stitch's layout for relational warehouses.

A column's type comes from the batch's JSON Schema where it declares a plain scalar, else from
the value itself (push and webhook data have no schema).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from services.loaders.core.names import SEPARATOR
from services.loaders.core.types import ColumnType, fits, schema_type, value_type

Cell = tuple[Any, ColumnType]  # value and the type it asks for
Row = dict[str, Cell]  # source column name -> cell


@dataclass
class Denested:
    """One record: its root row and, per subtable (source path), rows with their level ids."""

    root: Row
    children: dict[str, list[tuple[tuple[int, ...], Row]]] = field(default_factory=dict)


def properties(schema: Any) -> dict[str, Any] | None:
    """A JSON Schema's ``properties`` object, or None."""
    if isinstance(schema, dict) and isinstance(schema.get("properties"), dict):
        props: dict[str, Any] = schema["properties"]
        return props
    return None


def items(schema: Any) -> Any:
    """A JSON Schema's ``items`` (an array's item schema), or None."""
    return schema.get("items") if isinstance(schema, dict) else None


def declared(schema: Any) -> ColumnType | None:
    """The plain scalar type a property schema declares, or None."""
    return schema_type(schema) if isinstance(schema, dict) else None


def cell_type(declared: ColumnType | None, value: Any) -> ColumnType | None:
    """The declared type when the value fits it (a date-time string for a TIMESTAMP), else the
    value's own type: a value that contradicts its schema is kept, not coerced."""
    actual = value_type(value)
    if declared is None or actual is None:
        return actual
    if declared is actual or fits(declared, actual):
        return declared
    if declared is ColumnType.TIMESTAMP and actual is ColumnType.TEXT:
        return declared
    return actual


def denest(data: dict[str, Any], schema: dict[str, Any] | None) -> Denested:
    out = Denested(root={})
    _flatten(data, properties(schema), "", out.root, out, "", ())
    return out


def is_flat(data: dict[str, Any]) -> bool:
    """True when no value is an object or array (the common fast path)."""
    for value in data.values():
        kind = type(value)
        if kind is dict or kind is list:
            return False
    return True


def flat_row(data: dict[str, Any], props: dict[str, Any] | None) -> Row:
    row: Row = {}
    for key, value in data.items():
        if value is None:
            continue
        kind = cell_type(declared(props.get(key)) if props else None, value)
        if kind is not None:
            row[key] = (value, kind)
    return row


def nested_row(data: dict[str, Any], props: dict[str, Any] | None) -> Row:
    """A record's top-level fields as one row, objects and arrays kept whole as VARIANT
    values (warehouses with a semi-structured type: Snowflake)."""
    row: Row = {}
    for key, value in data.items():
        if value is None:
            continue
        if type(value) is dict or type(value) is list:
            row[key] = (value, ColumnType.VARIANT)
            continue
        kind = cell_type(declared(props.get(key)) if props else None, value)
        if kind is not None:
            row[key] = (value, kind)
    return row


def _flatten(
    obj: dict[str, Any],
    props: dict[str, Any] | None,
    prefix: str,
    row: Row,
    out: Denested,
    table_path: str,
    levels: tuple[int, ...],
) -> None:
    for key, value in obj.items():
        if value is None:
            continue
        name = f"{prefix}{key}"
        sub_schema = props.get(key) if props else None
        shape = type(value)
        if shape is dict:
            _flatten(value, properties(sub_schema), name + SEPARATOR, row, out, table_path, levels)
        elif shape is list:
            child_path = f"{table_path}{SEPARATOR}{name}" if table_path else name
            _array(value, items(sub_schema), child_path, out, levels)
        else:
            kind = cell_type(declared(sub_schema), value)
            if kind is not None:
                row[name] = (value, kind)


def _array(
    values: list[Any], item_schema: Any, path: str, out: Denested, levels: tuple[int, ...]
) -> None:
    rows = out.children.setdefault(path, [])
    for index, item in enumerate(values):
        item_levels = (*levels, index)
        row: Row = {}
        shape = type(item)
        if shape is dict:
            _flatten(item, properties(item_schema), "", row, out, path, item_levels)
        elif shape is list:
            _array(item, items(item_schema), f"{path}{SEPARATOR}value", out, item_levels)
        elif item is not None:
            kind = cell_type(declared(item_schema), item)
            if kind is not None:
                row["value"] = (item, kind)
        rows.append((item_levels, row))
