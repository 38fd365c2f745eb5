"""Compiled validators for clients' JSON Schemas, which are untrusted input.

A schema is compiled once per distinct content (bounded LRU cache), never per request. Before
compiling: a size limit, no remote ``$ref`` (nothing is ever fetched), known ``type`` names only.
``pattern``/``patternProperties`` run on RE2 (linear time), so no pattern can backtrack
catastrophically; a pattern RE2 cannot express is refused. Defaults are not injected into data
and ``format`` is an annotation only (JSON Schema's default), so records pass through unchanged.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import fastjsonschema
import orjson
import re2

_TYPES = frozenset({"null", "boolean", "object", "array", "number", "integer", "string"})

Validator = Callable[[Any], Any]


class SchemaRejected(ValueError):
    """The schema itself is unacceptable (too big, remote $ref, unknown type, bad pattern)."""


class RecordInvalid(ValueError):
    """A record does not conform: ``path`` and ``reason`` describe the first violation."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


def _refuse_fetch(uri: str) -> Any:
    raise SchemaRejected(f"remote $ref {uri!r} is not allowed")


_NO_FETCH = dict.fromkeys(("http", "https", "ftp", "file", "data", ""), _refuse_fetch)


def _inspect(schema: Any) -> None:
    """Refuse remote references and unknown types anywhere in the schema."""
    stack = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            ref = node.get("$ref")
            if ref is not None and not (isinstance(ref, str) and ref.startswith("#")):
                raise SchemaRejected(f"remote $ref {ref!r} is not allowed; only local '#...' refs")
            kind = node.get("type")
            kinds = kind if isinstance(kind, list) else [kind]
            for k in kinds:
                if k is not None and (not isinstance(k, str) or k not in _TYPES):
                    raise SchemaRejected(f"unknown type {k!r}")
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


class _Re2Pattern:
    """Stands in for the ``re.Pattern`` fastjsonschema's generated code calls ``search`` on."""

    def __init__(self, pattern: str) -> None:
        try:
            self._compiled = re2.compile(pattern)
        except re2.error as exc:
            raise SchemaRejected(
                f"pattern {pattern!r} is not supported (patterns must be RE2-compatible)"
            ) from exc

    def search(self, text: str) -> Any:
        return self._compiled.search(text)

    def match(self, text: str) -> Any:
        return self._compiled.match(text)


def compile_schema(schema: dict[str, Any]) -> Validator:
    _inspect(schema)
    try:
        validate: Validator = fastjsonschema.compile(
            schema, handlers=_NO_FETCH, use_default=False, use_formats=False
        )
    except fastjsonschema.JsonSchemaDefinitionException as exc:
        raise SchemaRejected(f"invalid schema: {exc}") from exc
    except RecursionError as exc:
        raise SchemaRejected("schema is too deeply nested") from exc
    except SchemaRejected:
        raise
    except Exception as exc:  # a malformed schema can trip fastjsonschema in many ways
        raise SchemaRejected(f"invalid schema: {type(exc).__name__}: {exc}") from exc
    patterns = validate.__globals__.get("REGEX_PATTERNS")
    if patterns:
        for source in list(patterns):
            patterns[source] = _Re2Pattern(source)
    return validate


class SchemaCache:
    """Distinct schema content -> compiled validator, least recently used evicted."""

    def __init__(self, max_entries: int, max_schema_bytes: int) -> None:
        self._max_entries = max_entries
        self._max_bytes = max_schema_bytes
        self._entries: OrderedDict[bytes, Validator] = OrderedDict()
        self._lock = threading.Lock()
        self.compiles = 0

    def __len__(self) -> int:
        return len(self._entries)

    def validator(self, schema: dict[str, Any]) -> Validator:
        try:
            encoded = orjson.dumps(schema, option=orjson.OPT_SORT_KEYS)
        except TypeError:  # an integer beyond 64 bits somewhere in the schema
            encoded = json.dumps(schema, sort_keys=True).encode()
        if len(encoded) > self._max_bytes:
            raise SchemaRejected(f"schema exceeds the limit of {self._max_bytes} bytes")
        key = hashlib.sha256(encoded).digest()
        with self._lock:
            found = self._entries.get(key)
            if found is not None:
                self._entries.move_to_end(key)
                return found
        compiled = compile_schema(schema)
        with self._lock:
            self.compiles += 1
            self._entries[key] = compiled
            while len(self._entries) > self._max_entries:
                self._entries.popitem(last=False)
        return compiled


def validate(validator: Validator, data: Any) -> None:
    """Raise ``RecordInvalid`` with the first violation's path and reason, or ``SchemaRejected``
    when the schema itself cannot be applied to the data (compiled, but unusable)."""
    try:
        validator(data)
    except fastjsonschema.JsonSchemaValueException as exc:
        path = exc.name or "data"
        message = exc.message or "does not conform"
        reason = message[len(path) :].strip() if message.startswith(path) else message
        raise RecordInvalid(path, reason) from exc
    except RecursionError as exc:  # a $ref cycle that never consumes data ({"$ref": "#/..."})
        raise SchemaRejected("schema refers to itself without end ($ref cycle)") from exc
    except Exception as exc:  # code generated from a hostile schema can fail (multipleOf 0, ...)
        raise SchemaRejected(f"schema cannot be applied: {type(exc).__name__}: {exc}") from exc
