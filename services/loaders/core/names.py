"""Column and table names per warehouse rules: length limits, case, and stable disambiguation.

A source name that already fits the warehouse's rules is used as it is. One that does not (too
long, or changed by case folding) becomes its normalised prefix plus a short hash of the full
source name: two source names that collide after normalising or truncating get different
columns, and the same source name always gets the same column, without any stored mapping.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal

SEPARATOR = "__"  # de-nesting: parent__child, table__array_field


@dataclass(frozen=True)
class NameRules:
    max_bytes: int  # identifier length limit (Postgres 63, Redshift 127, Snowflake 255 ...)
    case: Literal["preserve", "lower", "upper"] = "preserve"
    max_columns: int = 1600
    reserved_suffix_bytes: int = 4  # room for a type-split suffix such as "__st"

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
        if folded == source and len(source.encode()) <= limit and "\x00" not in source:
            return source
        digest = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()[:8]
        cleaned = folded.replace("\x00", "")
        return _truncate_utf8(cleaned, limit - 9) + "_" + self.fold(digest)


def _truncate_utf8(text: str, limit: int) -> str:
    encoded = text.encode()[: max(0, limit)]
    return encoded.decode("utf-8", errors="ignore")


def split_name(column: str, suffix: str) -> str:
    """The typed column a value goes to when its type differs from ``column``'s."""
    return f"{column}{SEPARATOR}{suffix}"
