"""Which offset each partition may commit (invariant 3): pure bookkeeping.

Every message read is either skipped (already registered, at or below its stream's high-water
mark) or belongs to exactly one *unit*: a table buffer, then the batch cut from it, known by the
offset of its first message. A unit is open until its batch is registered with the spool. A
partition may commit up to, not including, its lowest open unit's first offset, or past the
last message read when nothing is open: the contiguous prefix of durable records. Messages of a
unit are all above its first offset, so nothing below the commit point is left unregistered.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field


@dataclass
class _Partition:
    next_offset: int | None = None  # after the last message read
    open_units: set[int] = field(default_factory=set)
    heap: list[int] = field(default_factory=list)  # open unit offsets, lazily pruned
    committed: int | None = None  # the last commit we made (or learnt of)

    def lowest_open(self) -> int | None:
        while self.heap and self.heap[0] not in self.open_units:
            heapq.heappop(self.heap)
        return self.heap[0] if self.heap else None


class OffsetTracker:
    def __init__(self) -> None:
        self._partitions: dict[int, _Partition] = {}

    @property
    def partitions(self) -> list[int]:
        return sorted(self._partitions)

    def assign(self, partition: int) -> None:
        self._partitions.setdefault(partition, _Partition())

    def revoke(self, partition: int) -> None:
        self._partitions.pop(partition, None)

    def __contains__(self, partition: int) -> bool:
        return partition in self._partitions

    def read(self, partition: int, offset: int) -> None:
        """A message was consumed (skipped, or added to a unit opened before or with it)."""
        p = self._partitions[partition]
        if p.next_offset is None or offset >= p.next_offset:
            p.next_offset = offset + 1

    def open(self, partition: int, unit_offset: int) -> None:
        p = self._partitions[partition]
        p.open_units.add(unit_offset)
        heapq.heappush(p.heap, unit_offset)

    def close(self, partition: int, unit_offset: int) -> None:
        """The unit's batch is registered (a no-op for a partition no longer assigned)."""
        p = self._partitions.get(partition)
        if p is not None:
            p.open_units.discard(unit_offset)

    def open_units(self, partition: int) -> int:
        p = self._partitions.get(partition)
        return len(p.open_units) if p else 0

    def committable(self, partition: int) -> int | None:
        """The offset to commit for ``partition`` (the next one to read after a restart)."""
        p = self._partitions[partition]
        lowest = p.lowest_open()
        return lowest if lowest is not None else p.next_offset

    def due(self, partitions: list[int] | None = None) -> dict[int, int]:
        """Partitions whose committable offset moved past their last commit."""
        out: dict[int, int] = {}
        for partition in self.partitions if partitions is None else partitions:
            if partition not in self._partitions:
                continue
            offset = self.committable(partition)
            last = self._partitions[partition].committed
            if offset is not None and (last is None or offset > last):
                out[partition] = offset
        return out

    def committed(self, partition: int, offset: int) -> None:
        p = self._partitions.get(partition)
        if p is not None and (p.committed is None or offset > p.committed):
            p.committed = offset

    def commit_failed(self, partition: int) -> None:
        """Forget the last commit, so the next ``due`` offers it again."""
        p = self._partitions.get(partition)
        if p is not None:
            p.committed = None

    def last_committed(self, partition: int) -> int | None:
        p = self._partitions.get(partition)
        return p.committed if p else None
