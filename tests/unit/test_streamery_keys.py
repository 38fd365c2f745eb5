"""Batch object keys: deterministic, safe for any table name, reversible (invariant 4)."""

from __future__ import annotations

import pytest

from services.streamery.keys import (
    MAX_TABLE_SEGMENT,
    decode_table,
    encode_table,
    object_key,
    parse_object_key,
)

NAMES = [
    "orders",
    "a/b",
    "..",
    "../../etc/passwd",
    ".hidden",
    "with space",
    "quote'\"s",
    "100%",
    "%2F",
    "UPPER_lower-dash",
    "ünïcödé 表",
    "emoji 🧶",
    "back\\slash",
    "tab\there\nnewline",
    "~tilde",
    "a" * 255,
]


@pytest.mark.parametrize("name", NAMES)
def test_any_table_name_round_trips_through_a_single_safe_segment(name: str) -> None:
    key = object_key(12, name, 3, 40, 1234)
    segment = key.split("/")[1]
    assert key.count("/") == 3
    assert set(segment) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-%")
    parsed = parse_object_key(key)
    assert (parsed.client_id, parsed.table_name, parsed.partition) == (12, name, 3)
    assert (parsed.first_offset, parsed.last_offset) == (40, 1234)


def test_key_layout_is_the_documented_one() -> None:
    assert object_key(7, "orders", 11, 5, 17) == (
        "7/orders/11/00000000000000000005-00000000000000000017.jsonl.gz"
    )


def test_distinct_names_get_distinct_segments() -> None:
    segments = {encode_table(n) for n in [*NAMES, "A/b", "a%2Fb", "a.b", "a%2Eb"]}
    assert len(segments) == len(NAMES) + 4


def test_a_name_too_long_to_encode_is_shortened_with_its_digest() -> None:
    long_a = "表" * 254 + "a"  # 9 characters encoded each: far past the S3 key limit
    long_b = "表" * 254 + "b"
    seg_a, seg_b = encode_table(long_a), encode_table(long_b)
    assert len(seg_a) <= MAX_TABLE_SEGMENT
    assert seg_a != seg_b
    assert seg_a == encode_table(long_a)
    assert "~" in seg_a and decode_table(seg_a) is None
    assert seg_a.split("~")[0].endswith("%E8%A1%A8")  # never ends inside a %XX escape
    assert parse_object_key(object_key(1, long_a, 0, 1, 2)).table_name is None


def test_other_keys_are_not_batch_keys() -> None:
    with pytest.raises(ValueError):
        parse_object_key("7/orders/1/5-17.jsonl.gz")
    with pytest.raises(ValueError):
        parse_object_key("_unreadable/1/00000000000000000005.bin")
