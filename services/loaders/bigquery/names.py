"""BigQuery's name rules (pure): column (field) names are letters, digits and underscores, start
with a letter or underscore, at most 300 characters, compared case-insensitively, and may not
start with a few reserved prefixes. Table names here follow the same alphabet (BigQuery allows
more, but one alphabet keeps every name valid in SQL, APIs and load jobs alike).

A source name that already follows the rules (and is lowercase) is used as it is; any other
becomes its cleaned, lowercased, truncated form plus ``_`` and 8 hex digits of the source name's
SHA-1, so distinct sources never collide and the same source always maps to the same name.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

_VALID = re.compile(r"[a-z_][a-z0-9_]*")
_INVALID_CHARS = re.compile(r"[^a-z0-9_]+")
RESERVED_PREFIXES = (
    "_table_",
    "_file_",
    "_partition",
    "_row_timestamp",
    "__root__",
    "_colidentifier",
)
SPLIT_SUFFIX_BYTES = 4  # room for a type-split suffix such as "__st"


@dataclass(frozen=True)
class BigQueryNames:
    max_column: int = 300
    max_table: int = 1024
    max_columns: int = 10_000  # per table, nested fields included

    def column(self, source: str) -> str:
        return self._fit(source, self.max_column - SPLIT_SUFFIX_BYTES)

    def table(self, source: str) -> str:
        return self._fit(source, self.max_table)

    def _fit(self, source: str, limit: int) -> str:
        if (
            len(source) <= limit
            and _VALID.fullmatch(source)
            and not source.startswith(RESERVED_PREFIXES)
        ):
            return source
        digest = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()[:8]
        cleaned = _INVALID_CHARS.sub("_", source.lower()).strip("_") or "x"
        if cleaned[0].isdigit() or cleaned.startswith(RESERVED_PREFIXES):
            cleaned = "x_" + cleaned
        return cleaned[: limit - 9] + "_" + digest
