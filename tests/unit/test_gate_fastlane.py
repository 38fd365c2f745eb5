"""The gate's native /batch lane (services/gate/fastlane.py) only ever narrows the Python path:
for every generated body it either leaves the body to Python (None) or answers exactly what the
Python path makes of it (the same table, key names, version, schema and record lines, byte for
byte). A body the Python path refuses, the lane must never decide."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from common.wire import Header, PackedLines, TableRecords, encode_messages
from services.gate import fastlane
from services.gate.body import TooDeep, parse_json
from services.gate.errors import ApiError
from services.gate.records import Limits, RequestContext, batch_tables
from services.gate.schemas import SchemaCache, SchemaRejected

pytestmark = pytest.mark.skipif(
    not fastlane.available(), reason="skein_gate_native is not built here (no cargo)"
)

LIMITS = Limits(max_records=50, max_key_length=12)
MAX_DEPTH = 8
CONTEXT = RequestContext(
    client_id=7, received_at="2026-12-07T10:00:00.000000Z", request_id="r", may_have_reserved=True
)


def python_path(raw: bytes, cache: SchemaCache) -> Any:
    """What the Python path answers: (table fields, lines), or the ApiError's body."""
    try:
        body = parse_json(raw, MAX_DEPTH)
    except (ValueError, TooDeep) as exc:
        return ("error", str(exc))
    try:
        schema = body.get("schema") if isinstance(body, dict) else None
        if isinstance(schema, dict):
            cache.validator(schema)  # the route compiles it first (SchemaCache.prepare)
        tables = batch_tables(body, CONTEXT, LIMITS, cache)
    except ApiError as exc:
        return ("error", exc.body)
    except SchemaRejected as exc:
        return ("schema", str(exc))
    [table] = tables
    h = table.header
    return (h.table_name, list(h.key_names), h.table_version, h.schema, list(table.lines))


def lane(raw: bytes) -> Any:
    fast = fastlane.decide(raw, LIMITS, MAX_DEPTH, 1 << 20)
    if fast is None:
        return None
    return (
        fast.table_name,
        fast.key_names,
        fast.table_version,
        fast.schema(),
        list(fast.lines),
    )


CACHE = SchemaCache(64, 1 << 20)


def check(raw: bytes) -> Any:
    fast = lane(raw)
    if fast is not None:
        slow = python_path(raw, CACHE)
        if slow[0] != "schema":  # a schema fastjsonschema refuses: the route answers 400 first
            assert fast == slow, raw
    return fast


# ----------------------------------------------------------------------------- generation

TYPES = ["null", "boolean", "integer", "number", "string", "array", "object"]
NAMES = ["id", "a", "b", "é", 'q"t', "n"]
KEYS = [*NAMES, "_sdc_x"]
numbers = st.one_of(
    st.integers(-5, 5),
    st.sampled_from([2**53 + 1, 2**63 - 1, 2**64 - 1, -(2**63), 10**30]),
    st.floats(-5, 5, allow_nan=False),
    st.sampled_from([0.5, 1.0, -0.0, 2.0**53, 1e300, 9.3e18]),
)
types = st.one_of(
    st.sampled_from(TYPES), st.lists(st.sampled_from(TYPES), min_size=1, max_size=3, unique=True)
)
NOT_RUN = {
    "enum": [1, "a"],
    "anyOf": [{"type": "string"}, {"type": "null"}],
    "pattern": "^a",
    "multipleOf": 2,
    "$ref": "#/definitions/x",
    "minItems": 1,
}


def schemas(depth: int = 2) -> st.SearchStrategy[Any]:
    optional: dict[str, st.SearchStrategy[Any]] = {
        "type": types,
        "minLength": st.integers(0, 4) | st.just(2.5),
        "maxLength": st.integers(0, 8),
        "minimum": numbers,
        "maximum": numbers,
        "exclusiveMinimum": numbers,
        "exclusiveMaximum": numbers,
        "format": st.sampled_from(["date-time", "email"]),
        "title": st.text(max_size=3),
        "x-anything": st.just({"enum": [1]}),
    }
    if depth:
        sub = schemas(depth - 1)
        optional.update(
            properties=st.dictionaries(st.sampled_from(NAMES), sub | st.just(True), max_size=4),
            required=st.lists(st.sampled_from(NAMES), max_size=2, unique=True),
            additionalProperties=st.booleans() | sub,
            items=sub | st.just(True) | st.just([{"type": "integer"}]),
        )
    plain = st.fixed_dictionaries({}, optional=optional)
    # Now and then a keyword the lane does not run (the body is Python's then).
    odd = st.tuples(plain, st.sampled_from(sorted(NOT_RUN))).map(
        lambda p: {**p[0], p[1]: NOT_RUN[p[1]]}
    )
    return st.one_of(plain, plain, plain, plain, plain, plain, odd)


scalars = st.one_of(
    st.none(),
    st.booleans(),
    numbers,
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=6),
    st.sampled_from(["", "aaaaaaaaaaaaaaaa", 'x\n"\\\u2028\x00', "\u00e9\u00e9", "\U0001f600"]),
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(KEYS), inner, max_size=4)
    ),
    max_leaves=10,
)
datetimes = st.sampled_from(
    [
        "2026-12-07T10:00:00Z",
        "2026-12-07T10:00:00.123456+01:00",
        "2026-12-07 10:00:00",
        "2026-12-07",
        "2026-02-30T10:00:00Z",
        "yesterday",
        "2026-12-07T10:00:00.1234567Z",
    ]
)


def conforming(draw: Any, node: Any, depth: int = 0) -> Any:
    """A value ``node`` most likely takes (its bounds may still refuse it): mostly what the
    lane must decide, not only what it must leave."""
    if not isinstance(node, dict) or depth > 3:
        return draw(values)
    kind = node.get("type", TYPES)
    kind = draw(st.sampled_from(kind if isinstance(kind, list) else [kind]))
    if kind == "null":
        return None
    if kind == "boolean":
        return draw(st.booleans())
    if kind == "integer":
        return draw(st.integers(-5, 5) | st.sampled_from([3.0, 2**40]))
    if kind == "number":
        return draw(st.floats(-5, 5) | st.integers(-5, 5))
    if kind == "string":
        least = int(node.get("minLength", 0) + 0.5)
        most = max(least, min(int(node.get("maxLength", 6)), 6))
        return draw(st.text(min_size=least, max_size=most) | datetimes)
    if kind == "array":
        return [
            conforming(draw, node.get("items"), depth + 1) for _ in range(draw(st.integers(0, 2)))
        ]
    properties = node.get("properties", {})
    wanted = set(node.get("required", [])) | set(
        draw(st.lists(st.sampled_from(sorted(properties)), max_size=3)) if properties else []
    )
    value = {k: conforming(draw, properties.get(k), depth + 1) for k in sorted(wanted)}
    if node.get("additionalProperties", True) is not False and draw(st.booleans()):
        value["extra"] = draw(values)
    return value


@st.composite
def messages(draw: Any, schema: Any) -> Any:
    message: dict[str, Any] = {}
    fields = draw(st.permutations(["action", "sequence", "data", "time_extracted", "extra"]))
    odd = draw(st.integers(0, 4)) == 4  # now and then one Python refuses, or decides alone
    for field in fields:
        if field == "action":
            choices = ["upsert"] * 8 + ["activate_version"] + (["delete", 1] if odd else [])
            message["action"] = draw(st.sampled_from(choices))
        elif field == "sequence":
            message["sequence"] = draw(
                st.integers(0, 2**63 - 1) | st.sampled_from([-1, 2**63, 1.0, True, "1"])
                if odd
                else st.integers(0, 2**63 - 1)
            )
        elif field == "data" and (not odd or draw(st.integers(0, 10)) < 10):
            data = draw(st.dictionaries(st.sampled_from(KEYS), values, max_size=5)) if odd else {}
            message["data"] = data if data else conforming(draw, schema)
            if isinstance(message["data"], dict) and not odd:
                message["data"]["id"] = draw(st.integers(0, 9) | st.just("key"))
        elif field == "time_extracted" and draw(st.booleans()):
            message["time_extracted"] = draw(
                datetimes | (st.none() | st.just(5) if odd else datetimes)
            )
        elif field == "extra" and draw(st.integers(0, 5)) == 5:
            message["extracted"] = draw(values)
    return message


@st.composite
def bodies(draw: Any) -> bytes:
    schema = draw(schemas())
    schema["type"] = draw(st.sampled_from(["object", "object", ["object", "null"]]))
    schema["definitions"] = {"x": {"type": "integer"}}
    # (hypothesis draws small integers most: each rare case is the largest)
    if draw(st.integers(0, 40)) == 40:
        schema.pop("properties", None)
    else:
        schema.setdefault("properties", {})
        schema["properties"].pop("id", None)
    odd = draw(st.integers(0, 5)) == 5
    body: dict[str, Any] = {}
    for field in draw(st.permutations(["table_name", "schema", "key_names", "v", "messages"])):
        if field == "table_name":
            names = ["orders", "é" * 3] + (["", "_sdc_t", 5] if odd else [])
            body["table_name"] = draw(st.sampled_from(names))
        elif field == "schema":
            body["schema"] = schema
        elif field == "key_names" and draw(st.booleans()):
            body["key_names"] = draw(
                st.none() | st.lists(st.sampled_from(KEYS), max_size=2) | st.just("id")
                if odd
                else st.sampled_from([[], ["id"], None])
            )
        elif field == "v" and draw(st.booleans()):
            body["table_version"] = draw(
                st.none() | st.integers(0, 2**64) | st.just(1.5) if odd else st.integers(0, 9)
            )
        elif field == "messages":
            least = 0 if odd else 1
            body["messages"] = draw(st.lists(messages(schema), min_size=least, max_size=4))
    text = json.dumps(
        body,
        ensure_ascii=draw(st.booleans()),
        indent=draw(st.none() | st.just(1)),
        separators=draw(st.sampled_from([(",", ":"), (", ", ": ")])),
    )
    return text.encode()


# ----------------------------------------------------------------------------- the properties


def test_the_lane_decides_only_what_python_decides_and_as_python_does() -> None:
    decided: list[bool] = []

    @settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(bodies())
    @example(
        b'{"table_name":"t","schema":{"properties":{"id":{"type":"integer"}}},"key_names":["id"],'
        b'"messages":[{"action":"upsert","sequence":1,"data":{"id":1.0,"x":[0.1,"\\u00e9"]}}]}'
    )
    def each(raw: bytes) -> None:
        decided.append(check(raw) is not None)

    each()
    # Not vacuous: a share of the generated bodies (~10 %) are ones the lane decides.
    assert sum(decided) >= len(decided) // 20, f"{sum(decided)} of {len(decided)} decided"


def one(
    data: bytes = b"{}",
    schema: bytes = b'{"properties":{}}',
    message: bytes = b'"action":"upsert","sequence":1',
    top: bytes = b'"table_name":"t"',
    after: bytes = b"",
) -> bytes:
    """A body of one record, from its parts' JSON text (so it can say what json.dumps cannot)."""
    return (
        (b"{" + top + b',"schema":' + schema + b',"messages":[{' + message + b',"data":' + data)
        + b"}]}"
        + after
    )


ODD_BODIES = [
    # a duplicate key (Python keeps the last), at every level
    one(top=b'"table_name":"t","table_name":"u"'),
    one(message=b'"action":"upsert","sequence":1,"sequence":2'),
    one(b'{"a":1,"a":2}'),
    # numbers Python reads otherwise: -0, beyond 64 bits, beyond a double
    one(b'{"a":-0}'),
    one(b'{"a":123456789012345678901234567890}'),
    one(b'{"a":1e400}'),
    # a lone surrogate, invalid UTF-8, NaN
    one(b'{"a":"\\ud800"}'),
    one(b'{"a":"\xff"}'),
    one(b'{"a":NaN}'),
    # too deep (MAX_DEPTH 8: body, messages, message, data + 5 levels)
    one(b'{"a":[[[[[1]]]]]}'),
    one(top=b'"table_name":"t","x":[[[[[[[[1]]]]]]]]'),
    # draft-04 (an integer is never a float there), $ref, a false schema
    one(
        b'{"a":1.0}',
        b'{"$schema":"http://json-schema.org/draft-04/schema#",'
        b'"properties":{"a":{"type":"integer"}}}',
    ),
    one(b'{"a":1}', b'{"properties":{"a":{"$ref":"#/definitions/x"}},"definitions":{"x":{}}}'),
    one(schema=b'{"properties":{"a":false}}'),
    # an integer beyond 64 bits in the schema (the header keeps it exact), a repeated required
    # name (fastjsonschema refuses the schema), more key names than the lane looks up
    one(schema=b'{"properties":{},"title":100000000000000000000000}'),
    one(b'{"a":1}', b'{"properties":{},"required":["a","a"]}'),
    one(
        b"{" + b",".join(b'"k%d":1' % i for i in range(33)) + b"}",
        top=b'"table_name":"t","key_names":[' + b",".join(b'"k%d"' % i for i in range(33)) + b"]",
    ),
    # a key value longer than the limit (12 characters here), a reserved field, trailing bytes
    one(b'{"a":"' + "\u00e9".encode() * 13 + b'"}', top=b'"table_name":"t","key_names":["a"]'),
    one(b'{"_sdc_x":1}'),
    one(after=b" x"),
    b"",
]


@pytest.mark.parametrize("raw", ODD_BODIES)
def test_what_python_reads_otherwise_is_left_to_python(raw: bytes) -> None:
    assert check(one()) is not None  # the same body without its oddity is decided
    assert lane(raw) is None


def test_the_lane_knows_every_keyword_fastjsonschema_runs() -> None:
    """A fastjsonschema that learns a keyword must not have the lane take it for an annotation."""
    import skein_gate_native
    from fastjsonschema.draft06 import CodeGeneratorDraft06
    from fastjsonschema.draft07 import CodeGeneratorDraft07
    from fastjsonschema.draft2019 import CodeGeneratorDraft2019

    run, not_run = skein_gate_native.keywords()
    assert "$ref" in not_run and not set(run) & set(not_run)
    for generator in (CodeGeneratorDraft06, CodeGeneratorDraft07, CodeGeneratorDraft2019):
        assert set(generator({})._json_keywords_to_function) <= {*run, *not_run}


def test_a_key_value_of_many_bytes_within_the_character_limit_is_decided() -> None:
    # 12 characters, 24 bytes: the limit counts characters, as Python does.
    raw = one(b'{"a":"' + "\u00e9".encode() * 12 + b'"}', top=b'"table_name":"t","key_names":["a"]')
    assert check(raw) is not None


def stitch_body(n: int, ensure_ascii: bool = True) -> bytes:
    """What target-stitch sends: json.dumps' default separators, a Singer schema."""
    schema = {
        "type": "object",
        "properties": {
            "id": {"type": ["integer"]},
            "name": {"type": ["null", "string"], "maxLength": 255},
            "amount": {"type": ["null", "number"], "minimum": -1e9, "maximum": 1e9},
            "at": {"type": ["null", "string"], "format": "date-time"},
            "tags": {"type": ["null", "array"], "items": {"type": "string"}},
            "nested": {
                "type": ["null", "object"],
                "properties": {"ok": {"type": "boolean"}},
                "additionalProperties": False,
            },
        },
        "required": ["id"],
    }
    messages = [
        {
            "action": "upsert",
            "sequence": 1733565600000 + i,
            "data": {
                "id": i,
                "name": f"n\u00e9 {i}",
                "amount": i * 1.25,
                "at": "2026-12-07T10:00:00.000000Z",
                "tags": ["a", "b"],
                "nested": {"ok": True},
            },
            "time_extracted": "2026-12-07T10:00:00.000000Z",
        }
        for i in range(n)
    ]
    messages.append({"action": "activate_version", "sequence": 1733565600000 + n})
    body = {
        "table_name": "orders",
        "schema": schema,
        "key_names": ["id"],
        "table_version": 3,
        "messages": messages,
    }
    return json.dumps(body, ensure_ascii=ensure_ascii).encode()


@pytest.mark.parametrize("ensure_ascii", [True, False])
def test_a_target_stitch_body_is_decided_as_python_decides_it(ensure_ascii: bool) -> None:
    raw = stitch_body(20, ensure_ascii)
    decided = check(raw)
    assert decided is not None
    assert decided[0] == "orders" and decided[2] == 3 and len(decided[4]) == 21


def test_the_lines_travel_in_the_messages_python_would_produce() -> None:
    raw = stitch_body(300)
    fast = fastlane.decide(raw, Limits(), 64, 1 << 20)
    assert fast is not None
    schema = fast.schema()
    header = Header(7, "orders", ("id",), schema, 3, "2026-12-07T10:00:00Z", "r", "batch")
    lines = list(fast.lines)
    for max_bytes, one_message in ((1 << 20, True), (8 * 1024, False)):  # then the generic split
        packed = list(encode_messages(TableRecords(header, fast.lines), max_bytes))
        plain = list(encode_messages(TableRecords(header, lines), max_bytes))
        assert packed == plain
        assert (len(plain) == 1) is one_message


def test_packed_lines_are_a_sequence_of_the_lines() -> None:
    lines = PackedLines(b"a\nbb\n\nccc", [1, 4, 5, 9])
    assert list(lines) == [b"a", b"bb", b"", b"ccc"]
    assert lines[-1] == b"ccc" and lines[1:3] == [b"bb", b""] and len(lines) == 4


@settings(max_examples=300, deadline=None)
@given(st.floats(allow_nan=False, allow_infinity=False))
def test_floats_are_written_as_orjson_writes_them(value: float) -> None:
    raw = orjson.dumps(
        {
            "table_name": "t",
            "schema": {"properties": {}},
            "messages": [{"action": "upsert", "sequence": 1, "data": {"f": value}}],
        }
    )
    fast = lane(raw)
    if abs(value) >= 2.0**63 or (value == 0 and str(value).startswith("-")):
        assert fast is None
    else:
        assert fast is not None and fast[4] == python_path(raw, CACHE)[4]


@pytest.mark.parametrize(
    "text",
    [
        "2026-12-07T10:00:00Z",
        "2026-12-07 10:00:00.5+05:30",
        "2024-02-29",
        "2026-02-29",
        "2026-12-07T10:00:00.1234567",
        "2026-12-07T24:00:00",
        "2026-12-07T10:00",
        "0000-01-01",
    ],
)
def test_time_extracted_taken_is_a_subset_of_fromisoformat(text: str) -> None:
    import skein_gate_native

    if skein_gate_native.takes_datetime(text):
        datetime.fromisoformat(text)
