"""Pure parts of the gate under hostile input; the HTTP corpus is in test_bad_input.py."""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.wire import (
    Header,
    RecordTooLarge,
    TableRecords,
    decode_message,
    dumps,
    encode_messages,
)
from services.gate.body import (
    Malformed,
    TooDeep,
    _walk_too_deep,
    parse_json,
    read_limited,
    too_deep,
)
from services.gate.errors import ApiError
from services.gate.schemas import SchemaCache, SchemaRejected, validate

BIG = b"123456789012345678901234567890"  # forces the exact-integer (stdlib) parser


def read(body: bytes, encoding: str = "gzip", limit: int = 1 << 20) -> bytes:
    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(body), 7):  # small chunks: members and headers split anywhere
            yield body[i : i + 7]

    return asyncio.run(read_limited(chunks(), None, encoding, limit))


def test_concatenated_gzip_members_are_one_body() -> None:
    body = gzip.compress(b'[{"a":') + gzip.compress(b"") + gzip.compress(b" 1}]")
    assert read(body) == b'[{"a": 1}]'


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (gzip.compress(b"[]") + b"trailing", 400),
        (gzip.compress(b"[]") + b"\x00" * 8, 400),
        (gzip.compress(b"[]")[:-4], 400),
        (gzip.compress(b"[]") + gzip.compress(b" " * (2 << 20)), 413),
    ],
)
def test_gzip_tails_are_refused(body: bytes, status: int) -> None:
    with pytest.raises(ApiError) as refused:
        read(body)
    assert refused.value.status == status


@pytest.mark.parametrize(
    "body",
    [
        b"[1e400, " + BIG + b"]",
        b"[-1e400, " + BIG + b"]",
        b'["\\ud800", ' + BIG + b"]",
        b'[{"\\udfff": 1}, ' + BIG + b"]",
        b"[1e400]",
        b'["\\ud800"]',
    ],
)
def test_both_parsers_refuse_what_json_cannot_carry(body: bytes) -> None:
    with pytest.raises(Malformed):
        parse_json(body, 64)


def test_surrogate_pairs_and_big_integers_are_kept() -> None:
    assert parse_json(b'["\\ud83d\\ude00", ' + BIG + b"]", 64) == ["\U0001f600", int(BIG)]


@pytest.mark.parametrize(
    ("schema", "data"),
    [
        ({"properties": {"a": {"$ref": "#/properties/a"}}}, {"a": 1}),
        ({"properties": {"a": {"multipleOf": 0}}}, {"a": 3}),
    ],
)
def test_a_schema_that_compiles_but_cannot_validate_is_rejected(
    schema: dict[str, Any], data: dict[str, Any]
) -> None:
    validator = SchemaCache(8, 1 << 20).validator(schema)
    with pytest.raises(SchemaRejected):
        validate(validator, data)


def table(*sizes: int) -> TableRecords:
    header = Header(1, "t", (), None, None, "2026-11-26T10:00:00Z", "r", "push")
    return TableRecords(header, [b"x" * n for n in sizes])


def test_a_record_larger_than_the_message_target_travels_alone() -> None:
    values = list(encode_messages(table(10, 10, 5000, 10), 1024, 8192))
    assert [len(decode_message(v)[1]) for v in values] == [2, 1, 1]
    assert decode_message(values[1])[1] == [b"x" * 5000]
    with pytest.raises(RecordTooLarge):
        list(encode_messages(table(10, 9000), 1024, 8192))
    with pytest.raises(RecordTooLarge):  # without a record limit, the message target is one
        list(encode_messages(table(5000), 1024))


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=3),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=2), inner, max_size=3)
    ),
    max_leaves=30,
)


@settings(max_examples=500, deadline=None)
@given(value=json_values, limit=st.integers(1, 6))
def test_the_indentation_depth_check_agrees_with_walking_the_containers(
    value: object, limit: int
) -> None:
    expected = isinstance(value, dict | list) and _walk_too_deep(value, limit)
    assert too_deep(value, limit) == expected
    # And as parse_json checks a body (the value count taken from its one scan of the bytes).
    body = dumps(value)
    if expected:
        with pytest.raises(TooDeep):
            parse_json(body, limit)
    else:
        assert parse_json(body, limit) == json.loads(body)


def test_long_integers_are_exact_and_long_digit_strings_are_plain_strings() -> None:
    body = (
        b'{"a":123456789012345678901234,"b":[-92233720368547758090,1e19],'
        b'"c":"1234567890123456789012"}'
    )
    assert parse_json(body, 64) == {
        "a": 123456789012345678901234,
        "b": [-92233720368547758090, 1e19],
        "c": "1234567890123456789012",
    }
