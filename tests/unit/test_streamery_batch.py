"""The batch object format: header lines where they change, record lines byte for byte."""

from __future__ import annotations

import gzip

from common.wire import Header, TableRecords, encode_messages
from services.streamery.batch import Batch, Message, Stream, encode_body, read_body

SCHEMA_1 = {"properties": {"id": {"type": "integer"}}}
SCHEMA_2 = {"properties": {"id": {"type": "integer"}, "name": {"type": "string"}}}


def header(request: str, schema: object, at: str = "2026-11-26T10:00:00.000000Z") -> Header:
    return Header(7, "orders", ("id",), schema, None, at, request, "batch")  # type: ignore[arg-type]


def lines(start: int, n: int) -> list[bytes]:
    # Deliberately odd spacing and key order: the streamery must not re-serialise.
    return [
        b'{"action":"upsert","sequence":%d,"data":{"id":%d, "z":1,"a":"\\u00e9"}}' % (i, i)
        for i in range(start, start + n)
    ]


def messages_of(
    h: Header, records: list[bytes], first_offset: int, max_bytes: int
) -> list[Message]:
    out = []
    for i, value in enumerate(encode_messages(TableRecords(h, records), max_bytes)):
        length = value.index(b"\n")
        out.append(
            Message(
                first_offset + i, value, length, value.count(b"\n"), h.received_at, h.request_id
            )
        )
    return out


def test_round_trip_keeps_every_record_byte_for_byte_under_the_right_header() -> None:
    h1 = header("r1", SCHEMA_1, "2026-11-26T10:00:00.000000Z")
    h2 = header("r2", SCHEMA_2, "2026-11-26T10:00:05.000000Z")
    first = messages_of(h1, lines(0, 30), 100, 600)  # one request over several messages
    second = messages_of(h2, lines(30, 5), 100 + len(first), 1 << 20)
    assert len(first) > 2
    body = encode_body(first + second, 1)

    sections = list(read_body(body))
    assert [(h.request_id, h.schema) for h, _ in sections] == [("r1", SCHEMA_1), ("r2", SCHEMA_2)]
    assert sections[0][1] == lines(0, 30)
    assert sections[1][1] == lines(30, 5)
    # Plain gzip, newline-terminated JSON lines, header line first.
    text = gzip.decompress(body)
    assert text.endswith(b"\n") and text.startswith(b'{"v":1,')
    assert text.count(b'{"v":1,') == 2


def test_same_messages_give_the_same_object() -> None:
    msgs = messages_of(header("r1", None), lines(0, 10), 0, 1 << 20)
    assert encode_body(msgs, 1) == encode_body(msgs, 1)
    assert gzip.decompress(encode_body(msgs, 3)) == gzip.decompress(encode_body(msgs, 1))


def test_registration_describes_the_batch() -> None:
    h1 = header("r1", None, "2026-11-26T10:00:00.000000Z")
    h2 = header("r2", None, "2026-11-26T09:00:00.000000Z")
    msgs = messages_of(h1, lines(0, 3), 40, 1 << 20) + messages_of(h2, lines(3, 2), 41, 1 << 20)
    batch = Batch(Stream(3, 7, "a/b"), msgs, 1)
    batch.object_bytes = 99
    reg = batch.registration()
    assert reg.object_key == "7/a%2Fb/3/00000000000000000040-00000000000000000041.jsonl.gz"
    assert (reg.client_id, reg.table_name, reg.partition) == (7, "a/b", 3)
    assert (reg.first_offset, reg.last_offset, reg.record_count, reg.bytes) == (40, 41, 5, 99)
    assert reg.oldest_received_at == "2026-11-26T09:00:00.000000Z"
    assert reg.newest_received_at == "2026-11-26T10:00:00.000000Z"
    assert reg.request_ids == ("r1", "r2")


def test_keep_after_drops_what_another_writer_registered() -> None:
    msgs = [
        m
        for i in range(4)
        for m in messages_of(header(f"r{i}", None), lines(i, 1), 10 + i, 1 << 20)
    ]
    batch = Batch(Stream(0, 7, "orders"), msgs, 1)
    assert batch.keep_after(11)
    assert (batch.first_offset, batch.last_offset, batch.unit_offset) == (12, 13, 10)
    assert [h.request_id for h, _ in read_body(batch.body(1))] == ["r2", "r3"]
    assert not batch.keep_after(13)
