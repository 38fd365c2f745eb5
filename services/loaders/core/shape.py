"""A warehouse table's columns, and where each incoming value goes (pure).

``TableShape`` starts from the columns the table has and grows as a batch's values need new
columns, in-place widenings or type-split columns; the warehouse then applies the difference.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from services.loaders.core.names import NameRules, split_name
from services.loaders.core.types import ColumnType, fits, widens_to


@dataclass
class TableShape:
    name: str  # the warehouse table name
    columns: dict[str, ColumnType] = field(default_factory=dict)  # existing and planned
    exists: bool = False
    primary_key: tuple[str, ...] = ()
    added: dict[str, ColumnType] = field(default_factory=dict)
    widened: dict[str, ColumnType] = field(default_factory=dict)
    # A widened column's type before this lease (for the schema log).
    was: dict[str, ColumnType] = field(default_factory=dict)
    # Existing columns of a type the loader would not have made (a jsonb, a timestamp without
    # time zone): values reach them only through the warehouse's casts.
    foreign: set[str] = field(default_factory=set)

    @property
    def changed(self) -> bool:
        return not self.exists or bool(self.added) or bool(self.widened)

    def ensure(self, column: str, kind: ColumnType) -> None:
        if column not in self.columns:
            self.columns[column] = kind
            self.added[column] = kind


class ColumnLimit(Exception):
    """The table would exceed the warehouse's column-count limit."""


def place(shape: TableShape, rules: NameRules, source: str, kind: ColumnType) -> str:
    """The column a value of type ``kind`` from source column ``source`` is stored in.

    Same or compatible type: the base column. A safe widening: the base column, widened.
    Otherwise: the split column ``<base>__<suffix>`` (created if need be).
    """
    base = rules.column(source)
    current = shape.columns.get(base)
    if current is None:
        _add(shape, rules, base, kind)
        return base
    if fits(current, kind):
        return base
    wider = widens_to(current, kind) if rules.widen_in_place else None
    if wider is not None:
        shape.columns[base] = wider
        if base not in shape.added:
            shape.was.setdefault(base, current)
            shape.widened[base] = wider
        else:
            shape.added[base] = wider
        return base
    split = split_name(base, rules.fold(rules.suffix(kind.suffix)))
    if split not in shape.columns:
        _add(shape, rules, split, kind)
    return split


def _add(shape: TableShape, rules: NameRules, column: str, kind: ColumnType) -> None:
    if len(shape.columns) >= rules.max_columns:
        raise ColumnLimit(
            f"table {shape.name} would exceed the warehouse limit of {rules.max_columns} columns"
        )
    shape.ensure(column, kind)
