"""Compiled validators for clients' JSON Schemas, which are untrusted input.

A schema is compiled once per distinct content (bounded LRU cache), never per request. Before
compiling: a size limit, no remote ``$ref`` (nothing is ever fetched), known ``type`` names only.
``pattern``/``patternProperties`` run on RE2 (linear time), so no pattern can backtrack
catastrophically; a pattern RE2 cannot express is refused. Defaults are not injected into data
and ``format`` is an annotation only (JSON Schema's default), so records pass through unchanged.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import marshal
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple, Protocol

import fastjsonschema
import orjson
import re2
from fastjsonschema.ref_resolver import RefResolver

_TYPES = frozenset({"null", "boolean", "object", "array", "number", "integer", "string"})

Validator = Callable[[Any], Any]


class SchemaRejected(ValueError):
    """The schema itself is unacceptable (too big, remote $ref, unknown type, bad pattern).
    ``cpu_s``: the CPU seconds spent finding that out, where a compile did."""

    def __init__(self, message: str, cpu_s: float = 0.0) -> None:
        super().__init__(message)
        self.cpu_s = cpu_s


class Compiled(NamedTuple):
    """A schema's validator as marshalled module code, and the CPU seconds compiling took."""

    blob: bytes
    cpu_s: float


def compile_timed(schema: dict[str, Any]) -> Compiled:
    """``compile_to_blob`` in this thread, with this thread's CPU seconds on it."""
    began = time.thread_time()
    try:
        blob = compile_to_blob(schema)
    except SchemaRejected as exc:
        exc.cpu_s = time.thread_time() - began
        raise
    return Compiled(blob, time.thread_time() - began)


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


def compile_to_blob(schema: dict[str, Any]) -> bytes:
    """Generate and compile ``schema``'s validator; the marshalled module code (the costly
    part, run in the compile worker). Patterns are checked against RE2 here too."""
    _inspect(schema)
    try:
        source = fastjsonschema.compile_to_code(
            schema, handlers=_NO_FETCH, use_default=False, use_formats=False
        )
        # The validator is named after the schema's "$id" when it has one ("validate" else).
        name = RefResolver.from_schema(schema, handlers=_NO_FETCH, store={}).get_scope_name()
    except fastjsonschema.JsonSchemaDefinitionException as exc:
        raise SchemaRejected(f"invalid schema: {exc}") from exc
    except RecursionError as exc:
        raise SchemaRejected("schema is too deeply nested") from exc
    except SchemaRejected:
        raise
    except Exception as exc:  # a malformed schema can trip fastjsonschema in many ways
        raise SchemaRejected(f"invalid schema: {type(exc).__name__}: {exc}") from exc
    try:
        code = compile(f"{source}\n{_VALIDATE} = {name}\n", "<client schema>", "exec")
    except (SyntaxError, RecursionError) as exc:  # e.g. 20+ nested "items"
        raise SchemaRejected(f"invalid schema: too complex to compile ({exc})") from exc
    blob = marshal.dumps(code)
    for pattern in _load(blob)[1]:
        _Re2Pattern(pattern)  # refuses what RE2 cannot run
    return blob


_VALIDATE = "SKEIN_VALIDATE"  # the generated module's entry point, whatever it is named


def _load(blob: bytes) -> tuple[Validator, list[str]]:
    namespace: dict[str, Any] = {}
    try:
        # Code this gate's own worker generated and marshalled, never bytes from a client.
        exec(marshal.loads(blob), namespace)  # noqa: S102, S302
    except Exception as exc:  # a pattern Python's re refuses, ...
        raise SchemaRejected(f"invalid schema: {type(exc).__name__}: {exc}") from exc
    patterns = namespace.get("REGEX_PATTERNS") or {}
    sources = list(patterns)
    for source in sources:
        patterns[source] = _Re2Pattern(source)
    validate_fn: Validator = namespace[_VALIDATE]
    return validate_fn, sources


def load_validator(blob: bytes) -> Validator:
    """The validator from a compile worker's answer (cheap: defines the functions)."""
    return _load(blob)[0]


class Budget(Protocol):
    """Who may compile now (``compiler.CompileBudget``)."""

    def check(self, client_id: int) -> None: ...
    def finish(self, client_id: int, seconds: float, failed: bool) -> None: ...


class _Entry(NamedTuple):
    validator: Validator
    owner: int  # the client whose request compiled it (0: tools and tests)
    cost: int  # its marshalled code's size: a proxy for the memory it holds


class SchemaCache:
    """Distinct schema content -> compiled validator, least recently used evicted.

    Bounded in entries and in bytes (each entry costs its marshalled code's size; a 250 KB
    schema compiles to megabytes), and each client's entries to ``client_bytes``: a client
    past its share evicts its own oldest schemas, never the others'.

    ``prepare`` (the gate's /batch path) compiles a new schema off the event loop: in
    ``compile_blob`` (the compile worker process) when given, else in a thread, under
    ``budget``. ``validator`` is the synchronous lookup (compiling inline when missing: tools
    and tests)."""

    def __init__(
        self,
        max_entries: int,
        max_schema_bytes: int,
        compile_blob: Callable[[dict[str, Any]], Compiled] | None = None,
        budget: Budget | None = None,
        max_bytes: int = 256 << 20,
        client_bytes: int = 32 << 20,
    ) -> None:
        self._max_entries = max_entries
        self._max_schema_bytes = max_schema_bytes
        self._max_bytes = max_bytes
        self._client_bytes = client_bytes
        self._entries: OrderedDict[bytes, _Entry] = OrderedDict()
        self._bytes = 0
        self._owned: dict[int, int] = {}
        self._lock = threading.Lock()
        self._compile_blob = compile_blob or compile_timed
        self._budget = budget
        # Its own thread: a compile waiting on the worker never holds a thread that token
        # lookups and the other to_thread calls of the event loop need.
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="schema-compile")
        self._compiling: dict[bytes, asyncio.Future[Validator]] = {}
        # A client's new schemas compile one after another: (its lock, requests using it).
        self._client_locks: dict[int, tuple[asyncio.Lock, int]] = {}
        self.compiles = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def size_bytes(self) -> int:
        """Bytes of all cached validators."""
        return self._bytes

    def owned(self, client_id: int) -> int:
        """Bytes of cached validators ``client_id``'s requests compiled."""
        return self._owned.get(client_id, 0)

    def _key(self, schema: dict[str, Any]) -> bytes:
        try:
            encoded = orjson.dumps(schema, option=orjson.OPT_SORT_KEYS)
        except TypeError:  # an integer beyond 64 bits somewhere in the schema
            encoded = json.dumps(schema, sort_keys=True).encode()
        if len(encoded) > self._max_schema_bytes:
            raise SchemaRejected(f"schema exceeds the limit of {self._max_schema_bytes} bytes")
        return hashlib.sha256(encoded).digest()

    def _cached(self, key: bytes) -> Validator | None:
        with self._lock:
            found = self._entries.get(key)
            if found is None:
                return None
            self._entries.move_to_end(key)
            return found.validator

    def _store(self, key: bytes, entry: _Entry) -> None:
        with self._lock:
            self.compiles += 1
            self._drop(key)
            self._entries[key] = entry
            self._bytes += entry.cost
            self._owned[entry.owner] = self._owned.get(entry.owner, 0) + entry.cost
            if self._owned[entry.owner] > self._client_bytes:  # its own oldest go first
                for old in [k for k, e in self._entries.items() if e.owner == entry.owner]:
                    if old == key or self._owned[entry.owner] <= self._client_bytes:
                        break
                    self._drop(old)
            while len(self._entries) > 1 and (
                len(self._entries) > self._max_entries or self._bytes > self._max_bytes
            ):
                self._drop(next(iter(self._entries)))

    def _drop(self, key: bytes) -> None:
        entry = self._entries.pop(key, None)
        if entry is None:
            return
        self._bytes -= entry.cost
        left = self._owned[entry.owner] - entry.cost
        if left:
            self._owned[entry.owner] = left
        else:
            del self._owned[entry.owner]

    def validator(self, schema: dict[str, Any]) -> Validator:
        key = self._key(schema)
        found = self._cached(key)
        if found is not None:
            return found
        blob = compile_to_blob(schema)
        compiled = load_validator(blob)
        self._store(key, _Entry(compiled, 0, len(blob)))
        return compiled

    async def prepare(self, client_id: int, schema: Any) -> Validator | None:
        """The validator of a /batch body's schema, compiled off the event loop if new; None
        for a schema that is not an object (the body's own checks report it). Requests with
        a schema already being compiled wait for that compile; a client's distinct new
        schemas compile one after another, each under its budget."""
        if not isinstance(schema, dict):
            return None
        key = self._key(schema)
        found = self._cached(key)
        if found is not None:
            return found
        pending = self._compiling.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[Validator] = asyncio.get_running_loop().create_future()
        self._compiling[key] = future
        try:
            compiled, cost = await self._compile_for(client_id, schema)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: the waiters re-raise it, nobody else must
            raise
        else:
            future.set_result(compiled)
            self._store(key, _Entry(compiled, client_id, cost))
            return compiled
        finally:
            del self._compiling[key]

    async def _compile_for(self, client_id: int, schema: dict[str, Any]) -> tuple[Validator, int]:
        """The validator and its cost (the marshalled code's size)."""
        lock, users = self._client_locks.get(client_id, (asyncio.Lock(), 0))
        self._client_locks[client_id] = (lock, users + 1)
        try:
            async with lock:
                if self._budget is not None:
                    self._budget.check(client_id)
                cpu_s, failed = 0.0, True
                try:
                    blob, cpu_s = await asyncio.get_running_loop().run_in_executor(
                        self._executor, self._compile_blob, schema
                    )
                    compiled = load_validator(blob)
                    failed = False
                    return compiled, len(blob)
                except SchemaRejected as exc:
                    cpu_s = exc.cpu_s
                    raise
                finally:
                    if self._budget is not None:
                        self._budget.finish(client_id, cpu_s, failed)
        finally:
            lock, users = self._client_locks[client_id]
            if users > 1:
                self._client_locks[client_id] = (lock, users - 1)
            else:
                del self._client_locks[client_id]


class Prepared:
    """A validator already at hand, as ``batch_tables`` asks for one."""

    def __init__(self, validator: Validator) -> None:
        self._validator = validator

    def validator(self, _schema: dict[str, Any]) -> Validator:
        return self._validator


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
