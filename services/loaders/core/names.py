"""Column and table names per warehouse rules: length limits, case, and stable disambiguation.

A source name that already fits the warehouse's rules is used as it is. One that does not (too
long, or changed by case folding) becomes its normalised prefix plus a short hash of the full
source name: two source names that collide after normalising or truncating get different
columns, and the same source name always gets the same column, without any stored mapping.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

SEPARATOR = "__"  # de-nesting: parent__child, table__array_field


@dataclass(frozen=True)
class NameRules:
    max_bytes: int  # identifier length limit (Postgres 63, Redshift 127, Snowflake 255 ...)
    case: Literal["preserve", "lower", "upper"] = "preserve"
    max_columns: int = 1600
    reserved_suffix_bytes: int = 4  # room for a type-split suffix such as "__st"
    # Split-column suffixes that differ from the default (``ColumnType.value``), by that
    # default: Snowflake says "__it" where Postgres says "__bi".
    suffixes: Mapping[str, str] = field(default_factory=dict)
    # False where the warehouse cannot change a column's type (Redshift: bigint -> numeric):
    # the wider value goes to a split column instead.
    widen_in_place: bool = True

    def suffix(self, default: str) -> str:
        return self.suffixes.get(default, default)

    def fold(self, name: str) -> str:
        if self.case == "lower":
            return name.lower()
        if self.case == "upper":
            return name.upper()
        return name

    def column(self, source: str) -> str:
        """The warehouse column for a (de-nested) source name; stable and collision-free."""
        return self._fit(source, self.max_bytes - self.reserved_suffix_bytes)

    def table(self, source: str) -> str:
        return self._fit(source, self.max_bytes)

    def _fit(self, source: str, limit: int) -> str:
        folded = self.fold(source)
        if self._plain(source, folded) and len(folded.encode()) <= limit and "\x00" not in source:
            return folded
        digest = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()[:8]
        cleaned = folded.replace("\x00", "")
        return _truncate_utf8(cleaned, limit - 9) + "_" + self.fold(digest)

    def _plain(self, source: str, folded: str) -> bool:
        """Whether folding ``source`` keeps it distinct from every other plain name.

        Lowercase source names (the usual JSON spelling) are plain everywhere: an upper-casing
        warehouse shows ``id`` as ``ID``. A name with capitals there gets the hash instead, so
        ``Id`` and ``id`` never meet in one column."""
        if self.case == "upper":
            return folded.lower() == source
        return folded == source


def _truncate_utf8(text: str, limit: int) -> str:
    encoded = text.encode()[: max(0, limit)]
    return encoded.decode("utf-8", errors="ignore")


def split_name(column: str, suffix: str) -> str:
    """The typed column a value goes to when its type differs from ``column``'s."""
    return f"{column}{SEPARATOR}{suffix}"
