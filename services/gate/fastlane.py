"""The /batch fast lane (decision 12, the gate's part), where the ``skein_gate_native`` module
is installed (``make install`` builds it from ``services/gate/native/`` when cargo is at hand;
the image builds it).

``decide`` hands a /batch body to the native lane, which reads it once and, only if it can
decide all of it, answers what ``records.batch_tables`` would: the table, its key names and
version, the schema, and the record lines already serialised. Anything it cannot decide (any
error, a schema keyword it does not run, a duplicate key, a number Python reads differently)
answers None, and the route reads the body the Python way: that path stays the definition and
words every error. ``tests/unit/test_gate_fastlane.py`` holds the two to the same lines.

The route still compiles the schema with fastjsonschema (``SchemaCache.prepare``: its bounds,
its budget, its errors) before it produces what the lane decided.
What that saves per 1,000-record request: orjson's parse, the strictness scans, the validator
and a ``dumps`` per record.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from common.wire import PackedLines, TableRecords
from services.gate.records import Limits, RequestContext

try:
    import skein_gate_native as _native
except ImportError:  # not built here: every body takes the Python path
    _native = None  # type: ignore[assignment, unused-ignore]


def available() -> bool:
    return _native is not None


@dataclass(frozen=True)
class FastBatch:
    """A /batch body the native lane decided: valid, if its schema compiles."""

    table_name: str
    key_names: list[str]
    table_version: int | None
    schema_json: bytes
    lines: PackedLines

    def schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = orjson.loads(self.schema_json)
        return schema

    def table(self, ctx: RequestContext, schema: dict[str, Any]) -> TableRecords:
        header = ctx.header("batch", self.table_name, self.key_names, schema, self.table_version)
        return TableRecords(header, self.lines)


def decide(raw: bytes, limits: Limits, max_depth: int, max_schema_bytes: int) -> FastBatch | None:
    """The lane's reading of the /batch body ``raw``; None where Python must read it."""
    if _native is None:
        return None
    decided = _native.batch(
        raw, max_depth, limits.max_records, limits.max_key_length, max_schema_bytes
    )
    if decided is None:
        return None
    table_name, key_names, table_version, schema_json, blob, ends = decided
    return FastBatch(table_name, key_names, table_version, schema_json, PackedLines(blob, ends))
