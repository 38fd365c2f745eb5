"""The table buffers of every assigned partition: messages in, batches out (no I/O).

A message goes to the buffer of the (partition, client, table) its header line names, never by
the Kafka key alone, so one tenant's records cannot land in another's batch (invariant 6).
Messages at or below their stream's high-water mark were registered before a restart or a
rebalance and are skipped (invariant 4).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from common.wire import Header
from services.streamery.batch import UNREADABLE_CLIENT, Batch, Message, Stream, TableBuffer
from services.streamery.offsets import OffsetTracker
from services.streamery.policy import BufferView, CutPolicy, CutReason

_HEADER_CACHE = 4096


class UnreadableMessage(ValueError):
    """A message that is not in the records wire format this streamery reads."""


@dataclass(frozen=True)
class _HeaderInfo:
    line: bytes
    client_id: int
    table_name: str
    received_at: str
    request_id: str


class TableBuffers:
    def __init__(self, policy: CutPolicy, tracker: OffsetTracker) -> None:
        self.policy = policy
        self.tracker = tracker
        self._buffers: dict[Stream, TableBuffer] = {}
        self._marks: dict[int, dict[tuple[int, str], int]] = {}
        # Parsed header lines by Kafka key: the messages of one request share one.
        self._headers: dict[bytes, _HeaderInfo] = {}
        self.bytes = 0
        self.records = 0
        # Running totals, for metrics.
        self.records_read = 0
        self.skipped = 0

    def __len__(self) -> int:
        return len(self._buffers)

    def set_marks(self, partition: int, marks: dict[tuple[int, str], int]) -> None:
        """High-water marks of a newly assigned partition: (client_id, table) -> last offset."""
        self._marks[partition] = marks

    def add(
        self, partition: int, offset: int, key: bytes | None, value: bytes, now: float
    ) -> list[tuple[Batch, CutReason]]:
        """Buffer one message; the batches that must be cut because of it (before or after)."""
        info = self._header(key or b"", value)
        stream = Stream(partition, info.client_id, info.table_name)
        self.tracker.read(partition, offset)
        records = value.count(b"\n")
        self.records_read += records
        if offset <= self._marks.get(partition, {}).get((info.client_id, info.table_name), -1):
            self.skipped += 1
            return []
        message = Message(offset, value, len(info.line), records, info.received_at, info.request_id)
        cuts: list[tuple[Batch, CutReason]] = []
        buffer = self._buffers.get(stream)
        if buffer is not None:
            reason = self.policy.before_append(buffer.bytes, buffer.records, message.cost, records)
            if reason is not None:
                cuts.append((self._cut(stream), reason))
                buffer = None
        if buffer is None:
            buffer = self._buffers[stream] = TableBuffer(stream, now)
            self.tracker.open(partition, offset)
        buffer.add(message)
        buffer.updated_at = now
        self.bytes += message.cost
        self.records += records
        reason = self.policy.after_append(buffer.bytes, buffer.records)
        if reason is not None:
            cuts.append((self._cut(stream), reason))
        return cuts

    def due(
        self, now: float, *, shutting_down: bool = False, revoked: Iterable[int] = ()
    ) -> list[tuple[Batch, CutReason]]:
        """Cut what the policy says is due now (age, a quiet gap, memory), or everything of the
        partitions being revoked, or everything at shutdown."""
        views = (
            BufferView(s, s.partition, b.bytes, b.records, b.opened_at, b.updated_at)
            for s, b in self._buffers.items()
        )
        cuts = self.policy.due(views, now, shutting_down=shutting_down, revoked=set(revoked))
        return [(self._cut(cut.key), cut.reason) for cut in cuts]  # type: ignore[arg-type]

    def drop(self, partition: int) -> None:
        """Forget a partition that is gone (its unregistered records are read again elsewhere)."""
        for stream in [s for s in self._buffers if s.partition == partition]:
            self._cut(stream)
        self._marks.pop(partition, None)

    def oldest_opened_at(self) -> float | None:
        return min((b.opened_at for b in self._buffers.values()), default=None)

    def oldest_received(self, into: dict[int, str]) -> None:
        """Lower ``into[client_id]`` to the received-at of each buffer's first record (RFC 3339
        strings in one format: their order is time order)."""
        for stream, buffer in self._buffers.items():
            stamp = buffer.messages[0].received_at
            if stamp < into.get(stream.client_id, "\uffff"):
                into[stream.client_id] = stamp

    def _cut(self, stream: Stream) -> Batch:
        buffer = self._buffers.pop(stream)
        self.bytes -= buffer.bytes
        self.records -= buffer.records
        return buffer.cut()

    def park(self, partition: int, offset: int, value: bytes) -> Batch:
        """A batch of one unreadable message, to be kept in S3 but never loaded."""
        self.tracker.read(partition, offset)
        self.tracker.open(partition, offset)
        stream = Stream(partition, UNREADABLE_CLIENT, f"offset-{offset}")
        message = Message(offset, value, 0, 0, "", "")
        return Batch(stream, [message], message.cost, unreadable=True)

    def _header(self, key: bytes, value: bytes) -> _HeaderInfo:
        end = value.find(b"\n")
        length = len(value) if end == -1 else end
        cached = self._headers.get(key)
        if cached is not None and len(cached.line) == length and value.startswith(cached.line):
            return cached
        line = value[:length]
        try:
            header = Header.decode(line)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise UnreadableMessage(f"bad header line: {exc}") from exc
        fields = (header.client_id, header.table_name, header.received_at, header.request_id)
        if not (
            type(header.client_id) is int
            and header.client_id >= 0
            and all(isinstance(f, str) for f in fields[1:])
            and header.table_name
        ):
            raise UnreadableMessage(f"bad header fields: {fields!r}")
        if len(self._headers) >= _HEADER_CACHE:
            self._headers.clear()
        info = _HeaderInfo(
            line, header.client_id, header.table_name, header.received_at, header.request_id
        )
        self._headers[key] = info
        return info
