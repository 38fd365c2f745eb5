"""Compiled record plans: the loader's fast path for records shaped like ones already seen.

The general path (``PlanBuilder._upsert``) de-nests each record into cells, decides each
cell's column and renders it: tens of microseconds a record in Python, the loader's
bottleneck. Yet a batch mostly repeats a few record *shapes* (the same fields with the same JSON
types), and every decision the general path takes for a record depends only on its shape, the
batch header's schema and the table's shape, which within one segment only grows. So the first
record of each shape goes the general way; from the decisions it took, a plan is compiled: a
small generated function that checks that a record has exactly that shape and renders its values
straight into their staging positions, with the general path's own ``render``.

A record a plan does not take (another shape, an array anywhere, a date-time that does not
parse, a NUL character, a float large enough to be an overflowed 64-bit integer) takes the
general path, so the staged rows are the same with or without plans;
``tests/unit/test_loader_fastplan.py`` holds the two paths to that on generated records.

Like ``dataclasses`` and ``fastjsonschema`` this generates Python source. Nothing from the data
is ever spliced into it: field names and kinds are bound as constants (``K3``, ``T3``) in the
function's namespace and the source only names them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import CodeType
from typing import Any

from services.loaders.core.denest import cell_type, declared, properties
from services.loaders.core.names import SEPARATOR
from services.loaders.core.types import (
    INT64_MAX,
    INT64_MIN,
    ColumnType,
    parse_timestamp,
)

# (data, sequence, row text, time_extracted, (received_at, table_version, batched_at) as
# rendered for the current header, plain: the record's line holds no backslash) -> the staged
# line (fields joined, no newline), or None when the record does not have the shape.
Plan = Callable[[dict[str, Any], int, str, Any, tuple[str, str, str | None], bool], str | None]

# orjson reads an integer beyond 64 bits as a float: a float this large might be one.
_FLOAT_LIMIT = float(2**63)
# A column type's rendering inlined into a plan: (text before, Python expression over ``{0}``
# (the value), text after); the expression may use ``Q`` ('"') and ``QQ`` ('""'), and must not
# hold a single quote or a backslash (it goes into an f-string).
Inline = tuple[str, str, str]
_MAX_PLAN_FIELDS = 400  # a wider record is rare and not worth a generated function
# Plan sources whose code objects are kept (a few KB each), whichever clients' tables use them.
_COMPILED_SOURCES = 512


@dataclass(frozen=True)
class Leaf:
    """One scalar (or null) of the record: where it is, and what the general path did with it."""

    path: tuple[str, ...]
    source: str  # its de-nested source name ("address__city")
    python_type: type
    kind: ColumnType | None  # None: the value is null and has no column


def leaves(
    data: dict[str, Any], props: dict[str, Any] | None
) -> tuple[list[Leaf], list[tuple[tuple[str, ...], int]]] | None:
    """The record's scalar leaves and its objects' sizes (by path), or None when no plan can
    take a record of this shape (an array, or a value the general path treats specially)."""
    found: list[Leaf] = []
    objects: list[tuple[tuple[str, ...], int]] = [((), len(data))]
    if not _walk(data, props, "", (), found, objects):
        return None
    return found, objects


def _walk(
    obj: dict[str, Any],
    props: dict[str, Any] | None,
    prefix: str,
    path: tuple[str, ...],
    found: list[Leaf],
    objects: list[tuple[tuple[str, ...], int]],
) -> bool:
    for key, value in obj.items():
        here = (*path, key)
        sub = props.get(key) if props else None
        kind_of = type(value)
        if kind_of is dict:
            objects.append((here, len(value)))
            if not _walk(
                value,
                properties(sub),
                f"{prefix}{key}{SEPARATOR}",
                here,
                found,
                objects,
            ):
                return False
            continue
        if kind_of is list:
            return False
        if value is None:
            found.append(Leaf(here, f"{prefix}{key}", type(None), None))
            continue
        if kind_of is int and not INT64_MIN <= value <= INT64_MAX:
            return False
        if kind_of is float and not -_FLOAT_LIMIT < value < _FLOAT_LIMIT:
            return False
        kind = cell_type(declared(sub), value)
        if kind is None or kind_of not in (str, int, float, bool):
            return False
        if kind is ColumnType.TIMESTAMP and parse_timestamp(str(value)) is None:
            return False  # the general path keeps it as text: value-dependent, not shape
        found.append(Leaf(here, f"{prefix}{key}", kind_of, kind))
    return True


@dataclass(frozen=True)
class Layout:
    """Where the general path put a record of this shape: column positions in staging."""

    width: int  # staging columns when compiled (later rows may be wider; the spill pads)
    data: list[tuple[Leaf, int]]  # non-null leaves and their staging positions
    received_at: int
    sequence: int
    row: int | None  # None: root rows are numbered by their line (``implicit_row``)
    batched_at: int | None
    table_version: int | None
    extracted_at: int | None
    append_key: int | None  # __sdc_primary_key's position (append-only tables)


def compile_plan(
    leaves_found: list[Leaf],
    objects: list[tuple[tuple[str, ...], int]],
    layout: Layout,
    render: Callable[[ColumnType, Any], str],
    inline: Mapping[ColumnType, Inline],
    append_key: Callable[[int, dict[str, Any]], str] | None,
    plain: Mapping[ColumnType, Inline] | None = None,
) -> Plan | None:
    """The generated function for one record shape, or None when it would not pay.

    ``plain``: how a value of a type renders when its record is *plain*, its JSON line holding
    no backslash. JSON escapes every quote, backslash and control character inside a string, so
    then no string holds one, and a rendering that only guards against them (a CSV field's
    doubled quotes) can skip that; it must equal ``render`` on such values. The plan takes
    ``plain`` as its last argument and renders with these where given: ~7 % of the Postgres
    loader's per-record time on ~300-byte records of eight strings.
    """
    if len(leaves_found) > _MAX_PLAN_FIELDS:
        return None
    optional = (layout.row, layout.batched_at, layout.table_version, layout.extracted_at)
    system = {layout.received_at, layout.sequence, layout.append_key, *optional} - {None}
    positions = [at for _, at in layout.data]
    if len(set(positions)) != len(positions) or system & set(positions):
        return None  # two values meet in one column: leave that subtlety to the general path
    names: dict[str, Any] = {
        "Q": '"',
        "QQ": '""',
        "render": render,
        "parse_timestamp": parse_timestamp,
        "INT64_MIN": INT64_MIN,
        "INT64_MAX": INT64_MAX,
        "FLOAT_LIMIT": _FLOAT_LIMIT,
        "BIGINT": ColumnType.BIGINT,
        "TEXT": ColumnType.TEXT,
        "TIMESTAMP": ColumnType.TIMESTAMP,
        "append_key": append_key,
    }
    body = [f"if len(d) != {objects[0][1]}: return None"]
    variables: dict[tuple[str, ...], str] = {(): "d"}
    rendered: dict[tuple[str, ...], Inline] = {}
    rendered_plain: dict[tuple[str, ...], Inline] = {}
    plain = plain or {}

    def fetch(path: tuple[str, ...]) -> str:
        n = len(variables)
        names[f"K{n}"] = path[-1]
        body.append(f"v{n} = {variables[path[:-1]]}[K{n}]")
        variables[path] = f"v{n}"
        return f"v{n}"

    for path, size in objects[1:]:  # parents before children (the walk's order)
        var = fetch(path)
        body.append(f"if type({var}) is not dict or len({var}) != {size}: return None")
    for leaf in leaves_found:
        var = fetch(leaf.path)
        if leaf.kind is None:
            body.append(f"if {var} is not None: return None")
            continue
        check = f"type({var}) is not {leaf.python_type.__name__}"
        if leaf.python_type is int:
            check += f" or not INT64_MIN <= {var} <= INT64_MAX"
        elif leaf.python_type is float:
            check += f" or not -FLOAT_LIMIT < {var} < FLOAT_LIMIT"
        elif leaf.kind is ColumnType.TIMESTAMP:
            check += f" or parse_timestamp({var}) is None"
        body.append(f"if {check}: return None")
        names[f"T{var}"] = leaf.kind
        default = f"render(T{var}, {{0}})"
        rendered[leaf.path] = _field(inline.get(leaf.kind), default, var)
        rendered_plain[leaf.path] = _field(
            plain.get(leaf.kind) or inline.get(leaf.kind), default, var
        )

    def line_of(values: dict[tuple[str, ...], Inline]) -> str:
        fields: list[Inline] = [("", "", "")] * layout.width  # an empty field: NULL
        for leaf, at in layout.data:
            fields[at] = values[leaf.path]
        fields[layout.received_at] = ("", "context[0]", "")
        fields[layout.sequence] = _field(
            inline.get(ColumnType.BIGINT), "render(BIGINT, {0})", "seq"
        )
        if layout.row is not None:
            fields[layout.row] = ("", "row", "")
        if layout.batched_at is not None:
            fields[layout.batched_at] = ("", "context[2]", "")
        if layout.table_version is not None:
            fields[layout.table_version] = ("", "context[1]", "")
        if layout.extracted_at is not None:
            fields[layout.extracted_at] = ("", "render(TIMESTAMP, extracted)", "")
        if layout.append_key is not None:
            fields[layout.append_key] = ("", "render(TEXT, append_key(seq, d))", "")
        return _line(fields)

    line, plain_line = line_of(rendered), line_of(rendered_plain)
    source = "\n".join(
        [
            "def plan(d, seq, row, extracted, context, plain):",
            "    try:",
            *(f"        {statement}" for statement in body),
            "    except KeyError:",
            "        return None",
            *(["    if plain:", f"        return {plain_line}"] if plain_line != line else []),
            f"    return {line}",
        ]
    )
    exec(_compiled(source), names)  # noqa: S102 - see the module docstring
    plan: Plan = names["plan"]
    plan.width = layout.width  # type: ignore[attr-defined]
    plan.source = source  # type: ignore[attr-defined]  # for debugging
    return plan


@functools.lru_cache(maxsize=_COMPILED_SOURCES)
def _compiled(source: str) -> CodeType:
    """The source's code object. A plan's source names its fields and kinds (``K3``, ``T3``)
    but holds none of them, so every table whose records share a shape shares one source, and
    Python compiles it once per process, not once per lease: with many small tables, compiling
    was ~1 ms of every load. Least recently used sources go past ``_COMPILED_SOURCES``."""
    return compile(source, "<plan>", "exec")


def _field(inline: Inline | None, default: str, var: str) -> Inline:
    before, expression, after = inline or ("", default, "")
    return before, expression.format(var), after


def _line(fields: list[Inline]) -> str:
    """One f-string that renders the whole line: fields joined by commas."""
    parts: list[str] = []
    for n, (before, expression, after) in enumerate(fields):
        if "'" in expression or "\\" in expression or "{" in expression:
            raise ValueError(f"cannot inline {expression!r}")
        literal = ("," if n else "") + before
        parts.append(_literal(literal))
        if expression:
            parts.append("{" + expression + "}")
        parts.append(_literal(after))
    return "f'" + "".join(parts) + "'"


def _literal(text: str) -> str:
    return text.replace("\\", "\\\\").replace("'", "\\'").replace("{", "{{").replace("}", "}}")
