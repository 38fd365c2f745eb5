"""Table buffers, the batches cut from them, and the batch object format.

A batch object is gzip of JSON lines: the Kafka messages' own lines, in Kafka order. A message's
header line is written whenever it differs from the last header line written in that object (so
the object starts with one, carries a new one wherever the schema, key names, table version or
request changes, and a request split over several messages repeats nothing); record lines are
copied byte for byte, never parsed. Every line ends with ``\\n``. A reader tells the two apart by
their first key: header lines start ``{"v":``, record lines ``{"action":``.
"""

from __future__ import annotations

import io
import threading
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from isal import isal_zlib

from common.spool_client import BatchRegistration
from common.wire import Header
from services.streamery.keys import object_key, unreadable_key

# Python's own cost of holding one message (tuple, list slot, small ints), counted in memory.
MESSAGE_OVERHEAD = 200
# A batch of many tiny requests lists at most this many request ids in its registration.
MAX_REQUEST_IDS = 1000
# The client id of the stream an unreadable message is parked under (never a real client).
UNREADABLE_CLIENT = -1
_HEADER_START = b'{"v":'


class Stream(NamedTuple):
    """One table of one client in one partition: the unit of buffering, ordering and marks."""

    partition: int
    client_id: int
    table_name: str


class Message(NamedTuple):
    """One Kafka message of one stream, kept whole: header line + record lines."""

    offset: int
    value: bytes
    header_len: int  # value[:header_len] is the header line
    records: int
    received_at: str
    request_id: str

    @property
    def cost(self) -> int:
        return len(self.value) + MESSAGE_OVERHEAD


@dataclass
class TableBuffer:
    """A stream's messages since its last cut."""

    stream: Stream
    opened_at: float  # the streamery's monotonic clock when the first message arrived
    updated_at: float = 0.0  # ... when the last one did
    messages: list[Message] = field(default_factory=list)
    bytes: int = 0
    records: int = 0

    def add(self, message: Message) -> None:
        self.messages.append(message)
        self.bytes += message.cost
        self.records += message.records

    def cut(self) -> Batch:
        return Batch(self.stream, self.messages, self.bytes)


@dataclass
class Batch:
    """Messages of one stream, cut together, on their way to S3 and the spool.

    ``unit_offset`` is the first offset it was cut with: the offset tracker knows it by that,
    even after ``keep_after`` drops messages another writer already registered.
    """

    stream: Stream
    messages: list[Message]
    memory: int  # bytes held, as counted by the buffers
    unit_offset: int = -1
    abandoned: threading.Event = field(default_factory=threading.Event)
    object_bytes: int = 0  # size of the uploaded object
    # One message that is not in the records format: kept in S3 as it was, never registered.
    unreadable: bool = False

    def __post_init__(self) -> None:
        if not self.messages:
            raise ValueError("a batch holds at least one message")
        if self.unit_offset < 0:
            self.unit_offset = self.messages[0].offset

    @property
    def first_offset(self) -> int:
        return self.messages[0].offset

    @property
    def last_offset(self) -> int:
        return self.messages[-1].offset

    @property
    def record_count(self) -> int:
        return sum(m.records for m in self.messages)

    @property
    def object_key(self) -> str:
        s = self.stream
        if self.unreadable:
            return unreadable_key(s.partition, self.first_offset)
        return object_key(
            s.client_id, s.table_name, s.partition, self.first_offset, self.last_offset
        )

    def body(self, gzip_level: int) -> bytes:
        """The object to upload."""
        if self.unreadable:
            return self.messages[0].value
        return encode_body(self.messages, gzip_level)

    def keep_after(self, offset: int) -> bool:
        """Drop the messages at or below ``offset``; False when none is left."""
        self.messages = [m for m in self.messages if m.offset > offset]
        return bool(self.messages)

    def registration(self) -> BatchRegistration:
        received = [m.received_at for m in self.messages]
        request_ids = list(dict.fromkeys(m.request_id for m in self.messages))
        return BatchRegistration(
            object_key=self.object_key,
            client_id=self.stream.client_id,
            table_name=self.stream.table_name,
            partition=self.stream.partition,
            first_offset=self.first_offset,
            last_offset=self.last_offset,
            record_count=self.record_count,
            bytes=self.object_bytes,
            oldest_received_at=min(received),
            newest_received_at=max(received),
            request_ids=tuple(request_ids[:MAX_REQUEST_IDS]),
        )


def encode_body(messages: Sequence[Message], level: int) -> bytes:
    """The gzip object for these messages (see the module docstring), deflated by ISA-L (level
    0-3; ~5x zlib's speed at level 1 with a slightly better ratio, and it releases the GIL, so
    the upload threads compress on every core). Deterministic: the gzip wrapper writes no
    timestamp, so the same messages always give the same bytes."""
    gz = isal_zlib.compressobj(level, isal_zlib.DEFLATED, 31)
    # A BytesIO grows in place and hands over its buffer without a copy: joining a list of
    # chunks would hold the object twice for a moment (counted nowhere in the memory budget).
    out = io.BytesIO()
    last_header = b""
    for message in messages:
        value, header_len = message.value, message.header_len
        if message.records == 0:
            continue
        if header_len == len(last_header) and value.startswith(last_header):
            out.write(gz.compress(memoryview(value)[header_len + 1 :]))
        else:
            last_header = value[:header_len]
            out.write(gz.compress(value))
        out.write(gz.compress(b"\n"))
    out.write(gz.flush())
    return out.getvalue()


def read_body(body: bytes) -> Iterator[tuple[Header, list[bytes]]]:
    """The sections of a batch object: each header with the record lines that follow it."""
    header: Header | None = None
    lines: list[bytes] = []
    for line in zlib.decompress(body, 47).split(b"\n"):
        if not line:
            continue
        if line.startswith(_HEADER_START):
            if header is not None:
                yield header, lines
            header, lines = Header.decode(line), []
        elif header is None:
            raise ValueError("a batch object must start with a header line")
        else:
            lines.append(line)
    if header is not None:
        yield header, lines
