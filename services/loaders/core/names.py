"""Column and table names per warehouse rules: length limits, case, and stable disambiguation.

A source name that already fits the warehouse's rules is used as it is. One that does not (too
long, or changed by case folding) becomes its normalised prefix plus a short hash of the full
source name: two source names that collide after normalising or truncating get different
columns, and the same source name always gets the same column, without any stored mapping.

A subtable's name must also tell whose it is, without any stored mapping: the loader finds a
root's subtables among the warehouse's tables by name (``subtable_prefix``, ``subtable_of``).
Usually the name starts with the root's whole name and ``__``. Where the root's name cannot show
whole in it (a root name near the length limit, or one that gets a hash itself), it carries the
root's hash as well (``subtable``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

SEPARATOR = "__"  # de-nesting: parent__child, table__array_field
DIGEST_CHARS = 8  # hex digits of a name's SHA-1 in a hashed name


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

    def subtable(self, root: str, path: str) -> str:
        """The table of the array at ``path`` (``items``, ``items__tags``) of root ``root``.

        ``table(root__path)``, unless that is hashed and its kept prefix cannot hold the root's
        whole name and ``__``: then the name keeps a shorter prefix and carries the root's hash
        before its own, so the subtables of two roots with the same first bytes stay apart."""
        source = f"{root}{SEPARATOR}{path}"
        name = self.table(source)
        if name == self.fold(source) or self._shows_root(root):
            return name
        marked = self.fold(_digest(root) + _digest(source))
        return _truncate_utf8(_clean(self.fold(source)), self._marked_stem_bytes) + "_" + marked

    def subtable_prefix(self, root: str) -> str:
        """What the name of every subtable of ``root`` starts with (other tables may too; see
        ``subtable_of``), including those named ``table(root__path)`` before ``subtable``
        marked them with the root's hash."""
        if self._shows_root(root):
            return self.fold(root) + SEPARATOR
        return _truncate_utf8(_clean(self.fold(root + SEPARATOR)), self._marked_stem_bytes)

    def subtable_of(self, name: str, root: str) -> bool:
        """Whether ``subtable`` gives ``name`` to an array of ``root`` (not counting the names
        it gave before it marked long roots' subtables: those do not show whose they are)."""
        folded = self.fold(root)
        plain = self._plain(root, folded) and "\x00" not in root
        if plain and name.startswith(folded + SEPARATOR):
            return True  # a shown root's subtable, or a long root's that fits plainly
        if self._shows_root(root):
            return False
        tail = 2 * DIGEST_CHARS + 1  # "_", the root's digest, the subtable's
        mark = "_" + self.fold(_digest(root))
        stem = name[:-tail]
        return name[-tail:-DIGEST_CHARS] == mark and stem.startswith(self.subtable_prefix(root))

    @property
    def _marked_stem_bytes(self) -> int:
        return self.max_bytes - (2 * DIGEST_CHARS + 1)

    def _shows_root(self, root: str) -> bool:
        """Whether every ``table(root__path)`` starts with the root's whole name and ``__``:
        a plain root short enough to stay whole in a hashed name's kept prefix."""
        folded = self.fold(root)
        kept = self.max_bytes - DIGEST_CHARS - 1
        return (
            self._plain(root, folded)
            and "\x00" not in root
            and len((folded + SEPARATOR).encode()) <= kept
        )

    def _fit(self, source: str, limit: int) -> str:
        folded = self.fold(source)
        if self._plain(source, folded) and len(folded.encode()) <= limit and "\x00" not in source:
            return folded
        kept = limit - DIGEST_CHARS - 1
        return _truncate_utf8(_clean(folded), kept) + "_" + self.fold(_digest(source))

    def _plain(self, source: str, folded: str) -> bool:
        """Whether folding ``source`` keeps it distinct from every other plain name.

        Lowercase source names (the usual JSON spelling) are plain everywhere: an upper-casing
        warehouse shows ``id`` as ``ID``. A name with capitals there gets the hash instead, so
        ``Id`` and ``id`` never meet in one column."""
        if self.case == "upper":
            return folded.lower() == source
        return folded == source


def starts_with_pattern(prefix: str) -> str:
    """A LIKE pattern (the default escape, backslash) for the names that start with ``prefix``:
    its ``%``, ``_`` and ``\\`` are matched as themselves. Pass it as a parameter."""
    escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped + "%"


def _digest(source: str) -> str:
    return hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()[:DIGEST_CHARS]


def _clean(folded: str) -> str:
    return folded.replace("\x00", "")


def _truncate_utf8(text: str, limit: int) -> str:
    encoded = text.encode()[: max(0, limit)]
    return encoded.decode("utf-8", errors="ignore")


def split_name(column: str, suffix: str) -> str:
    """The typed column a value goes to when its type differs from ``column``'s."""
    return f"{column}{SEPARATOR}{suffix}"
