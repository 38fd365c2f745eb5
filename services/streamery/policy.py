"""When to cut a table's buffer into a batch, and when to stop reading: pure values.

Both are decided here and nowhere else, from plain numbers and an injected clock reading, so
they are tested without Kafka or S3 (``tests/unit/test_streamery_policy.py``).
"""

from __future__ import annotations

from collections.abc import Collection, Hashable, Iterable
from dataclasses import dataclass
from enum import StrEnum


class CutReason(StrEnum):
    SIZE = "size"  # the next message would take the batch past max_batch_bytes
    RECORDS = "records"  # ... past max_batch_records
    AGE = "age"  # its first message waited max_batch_age_s
    QUIET = "quiet"  # no message came for batch_quiet_s: what the table had is all there is
    FRESH = "fresh"  # its first message waited the fresh age (few tables open: cut early)
    MEMORY = "memory"  # all buffers together passed their share of the memory budget
    SHUTDOWN = "shutdown"  # SIGTERM: everything goes out before the final commit
    REVOKE = "revoke"  # the partition moves to another consumer


@dataclass(frozen=True)
class BufferView:
    """What the policy needs to know about one table buffer."""

    key: Hashable
    partition: int
    bytes: int
    records: int
    opened_at: float
    updated_at: float | None = None  # when its last message came (None: when it opened)


@dataclass(frozen=True)
class Cut:
    key: Hashable
    reason: CutReason


@dataclass(frozen=True)
class CutPolicy:
    """A buffer is cut at the first of: size, records, age, a quiet gap, memory pressure,
    shutdown, revoke.

    The quiet gap (``quiet_s``; 0 = never) makes freshness follow the load: a table whose
    records stopped coming is cut at once instead of waiting out ``max_age_s``, while a table
    still receiving records keeps growing its batch (under load, gaps between its messages are
    far shorter than the gap). Small batches this makes are not small loads when loaders are
    busy: the spool hands a table's waiting batches to one load together.

    The fresh age (``fresh_age_s``; 0 = off) bounds the wait at a trickle, where records come
    too often for a quiet gap and too slowly to fill a batch: a buffer is cut once its first
    record waited ``fresh_age_s``, or longer when many buffers are open. Young cuts are paced to
    ``fresh_cuts_per_s`` in all (the age is at least open buffers / that rate), so the batch rate,
    S3 objects and spool registrations, stays bounded whatever the number of tables; under load
    buffers fill to large batches before they age, and the loaders coalesce a table's waiting
    batches into one load.

    ``memory_budget`` is what buffers and batches in flight may hold together; buffers alone may
    fill ``buffer_share`` of it. Past that, the largest buffers are cut (the fewest, fullest
    batches free the most) until buffers hold half their share: cutting in one sweep rather
    than one buffer per message avoids a stream of tiny batches at the limit.
    """

    max_batch_bytes: int
    max_batch_records: int
    max_age_s: float
    memory_budget: int
    buffer_share: float = 0.5
    quiet_s: float = 0.0
    fresh_age_s: float = 0.0
    fresh_cuts_per_s: float = 100.0

    def fresh_age(self, open_buffers: int) -> float:
        """The age at which a buffer is cut early, with ``open_buffers`` buffers open (0: never)."""
        if not self.fresh_age_s:
            return 0.0
        return max(self.fresh_age_s, open_buffers / self.fresh_cuts_per_s)

    def before_append(
        self, buffered_bytes: int, buffered_records: int, add_bytes: int, add_records: int
    ) -> CutReason | None:
        """Cut a non-empty buffer before a message that would take it past a limit (a message is
        never split, so one larger than the limit makes a batch of its own)."""
        if buffered_records == 0 and buffered_bytes == 0:
            return None
        if buffered_bytes + add_bytes > self.max_batch_bytes:
            return CutReason.SIZE
        if buffered_records + add_records > self.max_batch_records:
            return CutReason.RECORDS
        return None

    def after_append(self, buffered_bytes: int, buffered_records: int) -> CutReason | None:
        """Cut a buffer that reached a limit exactly (or holds one oversized message)."""
        if buffered_bytes >= self.max_batch_bytes:
            return CutReason.SIZE
        if buffered_records >= self.max_batch_records:
            return CutReason.RECORDS
        return None

    @property
    def buffer_limit(self) -> int:
        return int(self.memory_budget * self.buffer_share)

    def due(
        self,
        buffers: Iterable[BufferView],
        now: float,
        *,
        shutting_down: bool = False,
        revoked: Collection[int] = (),
    ) -> list[Cut]:
        """The buffers to cut now, each once, with the first reason that applies."""
        cuts: list[Cut] = []
        kept: list[BufferView] = []
        views = list(buffers)
        fresh = self.fresh_age(len(views))
        for view in views:
            if shutting_down:
                cuts.append(Cut(view.key, CutReason.SHUTDOWN))
            elif view.partition in revoked:
                cuts.append(Cut(view.key, CutReason.REVOKE))
            elif now - view.opened_at >= self.max_age_s:
                cuts.append(Cut(view.key, CutReason.AGE))
            elif self.quiet_s and now - _last(view) >= self.quiet_s:
                cuts.append(Cut(view.key, CutReason.QUIET))
            elif fresh and now - view.opened_at >= fresh:
                cuts.append(Cut(view.key, CutReason.FRESH))
            else:
                kept.append(view)
        held = sum(v.bytes for v in kept)
        if held > self.buffer_limit:
            for view in sorted(kept, key=lambda v: v.bytes, reverse=True):
                if held <= self.buffer_limit // 2:
                    break
                cuts.append(Cut(view.key, CutReason.MEMORY))
                held -= view.bytes
        return cuts


def _last(view: BufferView) -> float:
    return view.opened_at if view.updated_at is None else view.updated_at


@dataclass(frozen=True)
class FlowPolicy:
    """Whether to stop reading from Kafka.

    Reading stops while S3 or the spool fails (nothing more could leave memory) and while
    buffers and batches in flight hold the memory budget; it resumes, with the stores healthy,
    once they are back under ``resume_fraction`` of it, so it does not flap at the limit.
    """

    memory_budget: int
    resume_fraction: float = 0.8

    def paused(self, *, was_paused: bool, held_bytes: int, failing: bool) -> bool:
        if failing or held_bytes >= self.memory_budget:
            return True
        if was_paused:
            return held_bytes > self.memory_budget * self.resume_fraction
        return False
