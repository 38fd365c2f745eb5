"""Validate Import API bodies and turn them into per-table record lines (pure: no I/O).

Each function takes an already-parsed body and returns the tables to produce, or raises the
``ApiError`` the client must see. Nothing is produced unless the whole request is valid.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from common.tokens import WebhookInfo
from common.wire import Header, TableRecords, dumps
from services.gate.errors import batch_error, forbidden, status_error, unprocessable
from services.gate.schemas import (
    Prepared,
    RecordInvalid,
    SchemaCache,
    SchemaRejected,
    validate,
)

MAX_SEQUENCE = 2**63 - 1
RESERVED = "_sdc"
MAX_NAME_LENGTH = 255
MAX_REASONS = 100
# Webhook senders cannot rename fields: a top-level field named _sdc... is kept under this
# prefix so it can never overwrite a system column.
WEBHOOK_RESERVED_RENAME = "x"


@dataclass(frozen=True)
class Limits:
    max_records: int = 20_000
    max_key_length: int = 1024


@dataclass(frozen=True)
class RequestContext:
    client_id: int
    received_at: str
    request_id: str
    may_have_reserved: bool = True  # False when the raw body has no '"_sdc' at all (fast path)

    def header(
        self,
        source: str,
        table_name: str,
        key_names: Iterable[str],
        schema: dict[str, Any] | None = None,
        table_version: int | None = None,
    ) -> Header:
        """The header of one table's records from this request."""
        return Header(
            client_id=self.client_id,
            table_name=table_name,
            key_names=tuple(key_names),
            schema=schema,
            table_version=table_version,
            received_at=self.received_at,
            request_id=self.request_id,
            source=source,
        )


def _is_int(value: Any) -> bool:
    return type(value) is int


def _name_problem(name: Any, what: str) -> str | None:
    if not isinstance(name, str) or not name:
        return f"{what} must be a non-empty string"
    if len(name) > MAX_NAME_LENGTH:
        return f"{what} is longer than {MAX_NAME_LENGTH} characters"
    if "\x00" in name:
        return f"{what} must not contain NUL characters"
    if name.startswith(RESERVED):
        return f"{what} {name!r} is reserved (names starting with {RESERVED} are)"
    return None


def _key_names_problem(key_names: Any) -> str | None:
    if not isinstance(key_names, list):
        return "key_names must be an array of strings"
    for k in key_names:
        problem = _name_problem(k, "key name")
        if problem:
            return problem
    if len(set(key_names)) != len(key_names):
        return "key_names must not repeat a name"
    return None


def _sequence_problem(sequence: Any) -> str | None:
    if not _is_int(sequence):
        return "sequence must be an integer"
    if not 0 <= sequence <= MAX_SEQUENCE:
        return f"sequence must be between 0 and {MAX_SEQUENCE}"
    return None


def _keys_problem(data: dict[str, Any], key_names: list[str], limits: Limits) -> str | None:
    for k in key_names:
        value = data.get(k)
        if value is None:
            return f"is missing key property {k}"
        if isinstance(value, str) and len(value) > limits.max_key_length:
            return f"has key property {k} longer than {limits.max_key_length} characters"
    return None


def _reserved_field(data: dict[str, Any]) -> str | None:
    for k in data:
        if k.startswith(RESERVED):
            return k
    return None


def _reserved_problem(field: str) -> str:
    return f"field {field!r} is reserved (names starting with {RESERVED} are)"


def _time_extracted_problem(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            datetime.fromisoformat(value)
            return None
        except ValueError:
            pass
    return "time_extracted must be an RFC 3339 date-time string"


def upsert_line(sequence: int, data: dict[str, Any], time_extracted: str | None) -> bytes:
    record: dict[str, Any] = {"action": "upsert", "sequence": sequence, "data": data}
    if time_extracted is not None:
        record["time_extracted"] = time_extracted
    return dumps(record)


def activate_line(sequence: int) -> bytes:
    return dumps({"action": "activate_version", "sequence": sequence})


def _count_problem(count: int, limits: Limits) -> str | None:
    if not 1 <= count <= limits.max_records:
        return f"A request must hold 1 to {limits.max_records} records; it held {count}"
    return None


# ----------------------------------------------------------------------------- /v2/import/batch


def batch_tables(
    body: Any, ctx: RequestContext, limits: Limits, schemas: SchemaCache | Prepared
) -> list[TableRecords]:
    """Validate a /batch body (one table, JSON Schema); every error is 400 ``{"error": ...}``."""
    if not isinstance(body, dict):
        raise batch_error("The request body must be a JSON object")
    table_name: str = body.get("table_name")  # type: ignore[assignment]
    problem = _name_problem(table_name, "table_name")
    if problem:
        raise batch_error(problem)
    schema = body.get("schema")
    if not isinstance(schema, dict) or not isinstance(schema.get("properties"), dict):
        raise batch_error("schema must be an object with properties")
    key_names = body.get("key_names", [])
    if key_names is None:
        key_names = []
    problem = _key_names_problem(key_names)
    if problem:
        raise batch_error(problem)
    table_version = body.get("table_version")
    if table_version is not None and not _is_int(table_version):
        raise batch_error("table_version must be an integer")
    messages = body.get("messages")
    if not isinstance(messages, list):
        raise batch_error("messages must be an array")
    problem = _count_problem(len(messages), limits)
    if problem:
        raise batch_error(problem)
    try:
        validator = schemas.validator(schema)
    except SchemaRejected as exc:
        raise batch_error(f"Invalid schema: {exc}") from exc

    lines: list[bytes] = []
    max_key_length = limits.max_key_length
    # Each record's checks inline, in the order their errors take precedence; a check's helper
    # runs only to word the error (a call per check and record cost ~8 % of this function).
    for i, message in enumerate(messages):
        if type(message) is not dict:
            raise batch_error(f"Record {i} must be an object")
        action = message.get("action")
        sequence = message.get("sequence")
        if type(sequence) is not int or not 0 <= sequence <= MAX_SEQUENCE:
            raise batch_error(f"Record {i}: {_sequence_problem(sequence)}")
        if action == "activate_version":
            lines.append(activate_line(sequence))
            continue
        if action != "upsert":
            raise batch_error(f"Record {i}: action must be 'upsert' or 'activate_version'")
        data = message.get("data")
        if type(data) is not dict:
            raise batch_error(f"Record {i}: data must be an object")
        try:
            validate(validator, data)
        except RecordInvalid as exc:
            raise batch_error(
                f"Record {i} did not conform to schema: {exc.path}: {exc.reason}"
            ) from exc
        except SchemaRejected as exc:
            raise batch_error(f"Invalid schema: {exc}") from exc
        for k in key_names:
            value = data.get(k)
            if value is None or (type(value) is str and len(value) > max_key_length):
                problem = _keys_problem(data, key_names, limits) or ""
                # The Import API's documented form for a missing key carries no index.
                raise batch_error(
                    f"Record {problem}"
                    if problem.startswith("is missing")
                    else f"Record {i} {problem}"
                )
        if ctx.may_have_reserved:
            reserved = _reserved_field(data)
            if reserved:
                raise batch_error(f"Record {i}: {_reserved_problem(reserved)}")
        time_extracted = message.get("time_extracted")
        if time_extracted is not None:
            problem = _time_extracted_problem(time_extracted)
            if problem:
                raise batch_error(f"Record {i}: {problem}")
        lines.append(upsert_line(sequence, data, time_extracted))

    header = ctx.header("batch", table_name, key_names, schema, table_version)
    return [TableRecords(header, lines)]


# ------------------------------------------------------------------------------ /v2/import/push


_PUSH_FIELDS = ("client_id", "table_name", "sequence", "action", "key_names", "data")


def _push_record_problem(i: int, record: Any, limits: Limits, ctx: RequestContext) -> str | None:
    if not isinstance(record, dict):
        return f"Record {i}: must be an object"
    missing = [f for f in _PUSH_FIELDS if f not in record]
    if missing:
        return f"Record {i}: missing required field(s) {', '.join(missing)}"
    if not _is_int(record["client_id"]):
        return f"Record {i}: client_id must be an integer"
    for problem in (
        _name_problem(record["table_name"], "table_name"),
        _sequence_problem(record["sequence"]),
        None if record["action"] == "upsert" else "action must be 'upsert'",
        _key_names_problem(record["key_names"]),
        None if isinstance(record["data"], dict) else "data must be an object",
    ):
        if problem:
            return f"Record {i}: {problem}"
    problem = _keys_problem(record["data"], record["key_names"], limits)
    if problem:
        return f"Record {i} {problem}"
    if ctx.may_have_reserved:
        reserved = _reserved_field(record["data"])
        if reserved:
            return (
                f"Record {i}: field {reserved!r} is reserved (names starting with {RESERVED} are)"
            )
    return None


def push_tables(body: Any, ctx: RequestContext, limits: Limits) -> list[TableRecords]:
    """Validate a /push (or /validate) body: records of several tables, no schema."""
    if not isinstance(body, list):
        raise status_error(400, "An array of records is expected")
    problem = _count_problem(len(body), limits)
    if problem:
        raise status_error(400, problem)
    # Another client's id anywhere in the request forbids all of it.
    for record in body:
        client_id = record.get("client_id") if isinstance(record, dict) else None
        if _is_int(client_id) and client_id != ctx.client_id:
            raise forbidden()
    reasons: list[str] = []
    for i, record in enumerate(body):
        problem = _push_record_problem(i, record, limits, ctx)
        if problem:
            reasons.append(problem)
            if len(reasons) >= MAX_REASONS:
                break
    if reasons:
        raise unprocessable(reasons)

    groups: dict[tuple[str, tuple[str, ...]], list[bytes]] = {}
    for record in body:
        group = (record["table_name"], tuple(record["key_names"]))
        groups.setdefault(group, []).append(upsert_line(record["sequence"], record["data"], None))
    return [
        TableRecords(ctx.header("push", table_name, key_names), lines)
        for (table_name, key_names), lines in groups.items()
    ]


# -------------------------------------------------------------------------------- webhooks


def webhook_tables(
    body: Any, ctx: RequestContext, limits: Limits, webhook: WebhookInfo, now_ns: int
) -> list[TableRecords]:
    """Each JSON object becomes one row of the webhook's table; sequence = receive ns + index."""
    objects = body if isinstance(body, list) else [body]
    if not all(isinstance(o, dict) for o in objects):
        raise status_error(400, "A JSON object or an array of JSON objects is expected")
    problem = _count_problem(len(objects), limits)
    if problem:
        raise status_error(400, problem)
    key_names = [webhook.key_field] if webhook.key_field else []
    lines = []
    for i, data in enumerate(objects):
        if ctx.may_have_reserved and _reserved_field(data):
            data = {
                (WEBHOOK_RESERVED_RENAME + k if k.startswith(RESERVED) else k): v
                for k, v in data.items()
            }
        problem = _keys_problem(data, key_names, limits)
        if problem:
            raise status_error(400, f"Record {i} {problem}")
        lines.append(upsert_line(min(now_ns + i, MAX_SEQUENCE), data, None))
    return [TableRecords(ctx.header("webhook", webhook.table_name, key_names), lines)]
