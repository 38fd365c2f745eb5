"""The records wire format: what the gate writes to Kafka and the streamery copies into batches.

A Kafka message is newline-delimited JSON. Line 1 is a header (one table of one client); every
other line is one record, serialised once by the gate and never re-parsed on the way to S3:

    {"v":1,"client_id":7,"table_name":"orders","key_names":["id"],"schema":{...}|null,
     "table_version":null,"received_at":"2026-11-26T16:31:12.123456Z","request_id":"...",
     "source":"batch"}
    {"action":"upsert","sequence":1732638672000000000,"data":{...},"time_extracted":"..."}
    {"action":"activate_version","sequence":1732638672000000001}

The key is ``{client_id}/{table_name}`` so one table stays in one partition, in order.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, overload

import orjson

FORMAT_VERSION = 1
HEADER_FORMAT = b"skein.v1"
# A JSON integer literal beyond 64 bits (or any 20+ digit run): orjson would read it as a float.
_LONG_NUMBER = re.compile(rb"\d{20,}|-\d{19}")
_DIGITS_AS_ZERO = bytes(0x30 if 0x30 <= b <= 0x39 else 0x2E for b in range(256))
_RUN_OF_19_DIGITS = b"0" * 19


def may_hold_long_integer(text: bytes, translated: bytes | None = None) -> bool:
    """Whether JSON ``text`` may hold an integer orjson cannot read exactly (then parse it with
    the stdlib). Digits are first mapped to one byte and searched for a 19-digit run, at C
    speed; only then is the exact pattern run (over every text it cost ~4x the parse).
    ``translated``: a copy of ``text`` already made with every digit, and nothing else, as
    ``0``, if the caller has one (the gate's one scan of a body serves another check too)."""
    if translated is None:
        translated = text.translate(_DIGITS_AS_ZERO)
    return _RUN_OF_19_DIGITS in translated and bool(_LONG_NUMBER.search(text))


def dumps(value: Any) -> bytes:
    """Compact JSON; integers beyond 64 bits (accepted exactly by the gate) use the slow path."""
    try:
        return orjson.dumps(value)
    except TypeError:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True)
class Header:
    client_id: int
    table_name: str
    key_names: tuple[str, ...]
    schema: dict[str, Any] | None
    table_version: int | None
    received_at: str
    request_id: str
    source: str  # "batch" | "push" | "webhook"

    def encode(self) -> bytes:
        return dumps(
            {
                "v": FORMAT_VERSION,
                "client_id": self.client_id,
                "table_name": self.table_name,
                "key_names": list(self.key_names),
                "schema": self.schema,
                "table_version": self.table_version,
                "received_at": self.received_at,
                "request_id": self.request_id,
                "source": self.source,
            }
        )

    @classmethod
    def decode(cls, line: bytes) -> Header:
        raw = orjson.loads(line)
        if raw.get("v") != FORMAT_VERSION:
            raise ValueError(f"unsupported records format version {raw.get('v')!r}")
        return cls(
            client_id=raw["client_id"],
            table_name=raw["table_name"],
            key_names=tuple(raw["key_names"]),
            schema=raw["schema"],
            table_version=raw["table_version"],
            received_at=raw["received_at"],
            request_id=raw["request_id"],
            source=raw["source"],
        )


def message_key(client_id: int, table_name: str) -> bytes:
    return f"{client_id}/{table_name}".encode()


class PackedLines(Sequence[bytes]):
    """Record lines already joined by newlines (``blob``), each ending at its ``ends`` offset:
    what the gate's native /batch lane writes. A sequence of the lines, without copying them
    until one is asked for."""

    __slots__ = ("blob", "ends")

    def __init__(self, blob: bytes, ends: list[int]) -> None:
        self.blob = blob
        self.ends = ends

    def __len__(self) -> int:
        return len(self.ends)

    @overload
    def __getitem__(self, index: int) -> bytes: ...
    @overload
    def __getitem__(self, index: slice) -> list[bytes]: ...
    def __getitem__(self, index: int | slice) -> bytes | list[bytes]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        end = self.ends[index]
        i = index % len(self.ends)
        start = self.ends[i - 1] + 1 if i else 0
        return self.blob[start:end]


@dataclass
class TableRecords:
    """One table's serialised record lines from one request, under one header."""

    header: Header
    lines: list[bytes] | PackedLines = field(default_factory=list)


class RecordTooLarge(ValueError):
    """A single record cannot fit in one Kafka message."""


def encode_messages(
    table: TableRecords, max_bytes: int, record_max_bytes: int | None = None
) -> Iterator[bytes]:
    """Split a table's lines into message values, each header + lines, each <= ``max_bytes``.

    A line too large for ``max_bytes`` goes alone into a message of up to ``record_max_bytes``
    (the topic's limit; default ``max_bytes``); a larger one raises ``RecordTooLarge``. Lines
    keep their order, so the concatenated messages hold the records in request order.
    """
    header = table.header.encode()
    budget = max_bytes - len(header) - 1
    alone = max(budget, (record_max_bytes or max_bytes) - len(header) - 1)
    if isinstance(table.lines, PackedLines) and len(table.lines.blob) + 1 <= budget:
        yield b"\n".join((header, table.lines.blob))  # all of them fit in one message
        return
    chunk: list[bytes] = []
    size = 0
    for line in table.lines:
        cost = len(line) + 1
        if cost > budget:
            if cost > alone:
                raise RecordTooLarge(
                    f"a record of {len(line)} bytes exceeds the per-record limit of {alone} bytes"
                )
            if chunk:
                yield b"\n".join([header, *chunk])
                chunk, size = [], 0
            yield b"\n".join([header, line])
            continue
        if chunk and size + cost > budget:
            yield b"\n".join([header, *chunk])
            chunk, size = [], 0
        chunk.append(line)
        size += cost
    if chunk:
        yield b"\n".join([header, *chunk])


def decode_message(value: bytes) -> tuple[Header, Sequence[bytes]]:
    """Header and the raw record lines of one message (lines are not parsed)."""
    first, _, rest = value.partition(b"\n")
    return Header.decode(first), rest.split(b"\n") if rest else []
