"""The streamery's main loop: Kafka in, batches out, offsets committed after the spool has them.

One thread (this loop) owns the consumer, the table buffers and the offset tracker; uploads and
registrations run on the shipper's pool and come back through its completion queue. The loop
never waits on S3; it waits on the spool only to read high-water marks when partitions arrive.

- Assignment: new partitions stay paused until their streams' high-water marks are read from
  the spool; messages at or below a mark are skipped (invariant 4).
- Commit: every ``commit_interval_s``, each partition's contiguous durable prefix (invariant 3,
  see ``offsets.py``); synchronously on revocation and shutdown.
- Backpressure: consumption pauses while S3 or the spool fails, or while buffers and batches in
  flight hold the memory budget (``FlowPolicy``); librdkafka's own queue is bounded by its share.
- Revocation and SIGTERM: cut the affected buffers, wait (bounded) for their batches to
  register, commit, and abandon whatever did not make it: it is read again, never lost.

Over 400 lines on purpose: it is one class whose state (consumer, buffers, offsets, pauses)
belongs to one thread, and its callbacks (assign, revoke, commit) read and change that state;
the decisions themselves are already elsewhere (``policy``, ``offsets``, ``buffers``,
``shipper``), so splitting further would spread one owner's state across files.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Collection
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition
from confluent_kafka.admin import AdminClient

from services.streamery import metrics
from services.streamery.batch import Batch
from services.streamery.buffers import TableBuffers, UnreadableMessage
from services.streamery.offsets import OffsetTracker
from services.streamery.policy import CutPolicy, CutReason, FlowPolicy
from services.streamery.settings import MiB, StreamerySettings
from services.streamery.shipper import Registrar, Shipper
from services.streamery.store import ObjectStore

log = logging.getLogger("skein.streamery")
_CONSUME_BATCH = 1000
_POLL_S = 0.1
_GAUGES_EVERY_S = 2.0
_MARKS_BACKOFF_MAX_S = 5.0


def kafka_config(settings: StreamerySettings) -> dict[str, Any]:
    """The consumer's configuration: explicit commits only, and a pre-fetch queue bounded by
    its share of the memory limit (the queue, plus up to one fetch response per broker)."""
    fetch = settings.fetch_queue_budget()
    return {
        **settings.kafka_config(),
        "group.id": settings.group_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "partition.assignment.strategy": "cooperative-sticky",
        "session.timeout.ms": settings.session_timeout_ms,
        "queued.max.messages.kbytes": max(1024, fetch // 2 // 1024),
        "fetch.max.bytes": max(1 * MiB, fetch // 8),
        # Each partition's fetch may overshoot the queue bound by this much (and by one message):
        # kept small, as a group member may own many partitions.
        "max.partition.fetch.bytes": 256 * 1024,
        # Once the queue is full, a partition waits this long before fetching again. The 1 s
        # default caps a drain of ~1 MiB messages at a queue's worth per second (~100 MB/s).
        "fetch.queue.backoff.ms": 10,
        "client.id": "skein-streamery",
    }


class Streamery:
    def __init__(
        self,
        settings: StreamerySettings,
        store: ObjectStore,
        spool: Registrar,
        *,
        consumer_factory: Callable[[dict[str, Any]], Consumer] = Consumer,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self._topic = settings.topic
        self._clock = clock
        self._spool = spool
        budget = settings.data_budget()
        self.cut_policy = CutPolicy(
            max_batch_bytes=settings.max_batch_bytes,
            max_batch_records=settings.max_batch_records,
            max_age_s=settings.max_batch_age_s,
            memory_budget=budget,
            quiet_s=settings.batch_quiet_s,
            fresh_age_s=settings.batch_fresh_age_s,
            fresh_cuts_per_s=settings.batch_fresh_cuts_per_s,
        )
        self.flow = FlowPolicy(memory_budget=budget)
        self._tracker = OffsetTracker()
        self._buffers = TableBuffers(self.cut_policy, self._tracker)
        self._shipper = Shipper(
            store,
            spool,
            workers=settings.upload_workers,
            gzip_level=settings.gzip_level,
            backoff_max_s=settings.retry_backoff_max_s,
        )
        config = kafka_config(settings) | {"on_commit": self._on_commit, "error_cb": self._on_error}
        self._consumer = consumer_factory(config)
        self._in_flight: Counter[int] = Counter()  # batches not yet back, per partition
        # Client id and oldest received-at of each batch in flight (by id(batch)), for freshness.
        self._in_flight_received: dict[int, tuple[int, str]] = {}
        self._in_flight_bytes = 0
        self._awaiting_marks: set[int] = set()
        self._rewound: set[int] = set()
        self._closing = False
        self._marks_delay = 0.0
        self._next_marks = 0.0
        self._paused = False
        self._fatal: KafkaError | None = None
        self._largest_message = 1 * MiB  # the gate's message size; grows if larger ones come
        self._counted = (0, 0)  # records read, messages skipped: already in the metrics
        self.joined = threading.Event()
        self._probe: AdminClient | None = None
        self._probe_lock = threading.Lock()
        metrics.MEMORY_LIMIT.set(settings.memory_limit_bytes)

    # -- the loop
    def run(self, stop: threading.Event) -> int:
        """Consume until ``stop`` is set (SIGTERM), then flush, commit and leave the group."""
        self._consumer.subscribe(
            [self._topic],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        log.info("streamery started", extra={"topic": self._topic, "group": self.settings.group_id})
        now = self._clock()
        next_commit = next_gauges = now
        try:
            while not stop.is_set() and self._fatal is None:
                # consume(n, t) waits for n messages or t seconds: take what is there, and
                # wait only when nothing is (for one message).
                batch = self._consumer.consume(self._consume_count(), 0)
                if not batch:
                    batch = self._consumer.consume(1, _POLL_S)
                batch.reverse()
                while batch:  # release each message's librdkafka memory as soon as it is taken
                    self._take(batch.pop())
                now = self._clock()
                self._collect()
                self._ship_all(self._buffers.due(now))
                self._apply_flow()
                if self._awaiting_marks and now >= self._next_marks:
                    self._read_marks()
                if now >= next_commit:
                    self._commit()
                    next_commit = now + self.settings.commit_interval_s
                if now >= next_gauges:
                    self._update_gauges(now)
                    next_gauges = now + _GAUGES_EVERY_S
        finally:
            self._shutdown()
        if self._fatal is not None:
            log.error("fatal Kafka error", extra={"error": str(self._fatal)})
            return 1
        return 0

    def _take(self, message: Message) -> None:
        error = message.error()
        if error is not None:
            if error.code() != KafkaError._PARTITION_EOF:
                log.warning("consume error", extra={"error": str(error)})
            return
        partition, offset = message.partition(), message.offset()
        if partition is None or offset is None or partition not in self._tracker:
            return  # a stale message of a partition no longer ours
        if partition in self._awaiting_marks:
            # Paused until its marks are known, so this should not happen; if it does, read it
            # again later: rewind to the first such message and drop the rest.
            if partition not in self._rewound:
                log.warning("message before marks: rewinding", extra={"partition": partition})
                self._consumer.seek(TopicPartition(self._topic, partition, offset))
                self._rewound.add(partition)
            return
        value = message.value()
        if value is not None and len(value) > self._largest_message:
            self._largest_message = len(value)
        try:
            if value is None:
                raise UnreadableMessage("a message without a value")
            cuts = self._buffers.add(partition, offset, message.key(), value, self._clock())
        except UnreadableMessage as exc:
            log.error(
                "unreadable message kept in S3, not loaded",
                extra={"partition": partition, "offset": offset, "error": str(exc)},
            )
            metrics.UNREADABLE.inc()
            self._ship(self._buffers.park(partition, offset, value or b""), None)
            return
        metrics.BYTES_READ.inc(len(value))
        self._ship_all(cuts)

    def _ship_all(self, cuts: list[tuple[Batch, CutReason]]) -> None:
        for batch, reason in cuts:
            self._ship(batch, reason)

    def _ship(self, batch: Batch, reason: CutReason | None) -> None:
        if reason is not None:
            metrics.CUTS.labels(reason.value).inc()
        self._in_flight[batch.stream.partition] += 1
        self._in_flight_bytes += batch.memory
        if not batch.unreadable:
            self._in_flight_received[id(batch)] = (
                batch.stream.client_id,
                batch.messages[0].received_at,
            )
        self._shipper.ship(batch)

    def _collect(self, wait_s: float = 0.0) -> None:
        """Take the shipper's outcomes: registered batches close their offset units."""
        while True:
            try:
                done = self._shipper.completions.get(block=wait_s > 0, timeout=wait_s or None)
            except queue.Empty:
                return
            wait_s = 0.0
            batch = done.batch
            self._in_flight[batch.stream.partition] -= 1
            self._in_flight_bytes -= batch.memory
            self._in_flight_received.pop(id(batch), None)
            if done.registered:
                self._tracker.close(batch.stream.partition, batch.unit_offset)

    # -- backpressure
    def _consume_count(self) -> int:
        """Take no more messages at once than the budget has room for: a consume() call may
        return many ~1 MiB messages, all held before the flow policy sees them."""
        free = self.flow.memory_budget - self.held_bytes()
        return max(1, min(_CONSUME_BATCH, free // self._largest_message))

    def held_bytes(self) -> int:
        return self._buffers.bytes + self._in_flight_bytes + self._shipper.body_bytes

    def _apply_flow(self) -> None:
        held, failing = self.held_bytes(), self._shipper.failing
        paused = self.flow.paused(was_paused=self._paused, held_bytes=held, failing=failing)
        if paused == self._paused:
            return
        self._paused = paused
        metrics.PAUSED.set(int(paused))
        assigned = [tp for tp in self._consumer.assignment() if tp.partition in self._tracker]
        if paused:
            self._consumer.pause(assigned)
        else:
            ready = [tp for tp in assigned if tp.partition not in self._awaiting_marks]
            if ready:
                self._consumer.resume(ready)
        log.info(
            "consumption paused" if paused else "consumption resumed",
            extra={"held_bytes": held, "budget": self.flow.memory_budget, "failing": failing},
        )

    # -- partitions coming and going
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        ours = [p for p in partitions if p.topic == self._topic]
        log.info("partitions assigned", extra={"partitions": [p.partition for p in ours]})
        consumer.incremental_assign(partitions)  # cooperative-sticky: deltas only
        consumer.pause(partitions)  # until their high-water marks are known
        for tp in ours:
            self._tracker.assign(tp.partition)
            self._awaiting_marks.add(tp.partition)
        self._next_marks = 0.0
        self.joined.set()

    def _read_marks(self) -> None:
        wanted = sorted(self._awaiting_marks)
        try:
            marks = self._spool.high_water(wanted)
            committed = self._consumer.committed(
                [TopicPartition(self._topic, p) for p in wanted], timeout=10
            )
        except Exception as exc:
            self._marks_delay = min(max(self._marks_delay * 2, 0.2), _MARKS_BACKOFF_MAX_S)
            self._next_marks = self._clock() + self._marks_delay
            log.warning("cannot read high-water marks yet", extra={"error": str(exc)})
            return
        self._marks_delay = 0.0
        for p in wanted:
            self._buffers.set_marks(
                p, {(c, t): offset for (mp, c, t), offset in marks.items() if mp == p}
            )
        for tp in committed:
            if tp.offset >= 0:
                self._tracker.committed(tp.partition, tp.offset)
        self._awaiting_marks.difference_update(wanted)
        self._rewound.difference_update(wanted)
        log.info("high-water marks read", extra={"partitions": wanted, "marks": len(marks)})
        if not self._paused:
            self._consumer.resume([TopicPartition(self._topic, p) for p in wanted])

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        gone = {tp.partition for tp in partitions if tp.topic == self._topic}
        log.info("partitions revoked", extra={"partitions": sorted(gone)})
        # On close, shutdown has already waited for what could be registered.
        timeout = 0.0 if self._closing else self.settings.revoke_timeout_s
        self._release(gone, timeout, commit=True)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        gone = {tp.partition for tp in partitions if tp.topic == self._topic}
        log.warning("partitions lost", extra={"partitions": sorted(gone)})
        self._release(gone, 0.0, commit=False)

    def _release(self, gone: Collection[int], timeout: float, *, commit: bool) -> None:
        """Flush and commit what can be made durable in ``timeout``, then forget the partitions."""
        self._ship_all(self._buffers.due(self._clock(), revoked=gone))
        self._drain(gone, timeout)
        if commit:
            self._commit(sorted(gone), sync=True)
        self._shipper.abandon(gone)
        for p in gone:
            self._buffers.drop(p)
            self._tracker.revoke(p)
            self._awaiting_marks.discard(p)
            self._rewound.discard(p)
            for gauge in (metrics.LAG, metrics.COMMITTED):
                with contextlib.suppress(KeyError):
                    gauge.remove(str(p))

    def _drain(self, partitions: Collection[int] | None, timeout: float) -> bool:
        """Wait up to ``timeout`` until no batch of these partitions (all: None) is in flight."""
        deadline = self._clock() + timeout

        def pending() -> int:
            if partitions is None:
                return sum(self._in_flight.values())
            return sum(self._in_flight[p] for p in partitions)

        while pending() and self._clock() < deadline:
            self._collect(wait_s=0.05)
        left = pending()
        if left:
            log.warning(
                "batches not registered in time: their records will be read again",
                extra={"batches": left, "timeout_s": timeout},
            )
        return left == 0

    def _shutdown(self) -> None:
        log.info("shutting down: cutting every buffer")
        self._ship_all(self._buffers.due(self._clock(), shutting_down=True))
        with contextlib.suppress(KafkaException):
            self._consumer.pause(self._consumer.assignment())
        self._drain(None, self.settings.shutdown_timeout_s)
        self._commit(sync=True)
        self._shipper.close()
        self._closing = True
        try:
            self._consumer.close()  # leaves the group; our on_revoke finds nothing left to do
        except (KafkaException, RuntimeError) as exc:
            log.warning("consumer close failed", extra={"error": str(exc)})
        log.info("streamery stopped")

    # -- commits
    def _commit(self, partitions: list[int] | None = None, *, sync: bool = False) -> None:
        due = self._tracker.due(partitions)
        if not due:
            return
        offsets = [TopicPartition(self._topic, p, offset) for p, offset in sorted(due.items())]
        try:
            if sync:
                result = self._consumer.commit(offsets=offsets, asynchronous=False)
            else:
                self._consumer.commit(offsets=offsets, asynchronous=True)
                result = offsets
        except KafkaException as exc:
            if exc.args and exc.args[0].code() == KafkaError._NO_OFFSET:
                return
            metrics.COMMIT_FAILURES.inc()
            log.warning(
                "commit failed",
                extra={"error": str(exc), "offsets": {str(p): o for p, o in due.items()}},
            )
            for p in due:
                self._tracker.commit_failed(p)
            return
        for tp in result:
            if tp.error is None:
                self._tracker.committed(tp.partition, tp.offset)
                metrics.COMMITTED.labels(str(tp.partition)).set(tp.offset)

    def _on_commit(self, error: KafkaError | None, partitions: list[TopicPartition]) -> None:
        if error is not None and error.code() == KafkaError._NO_OFFSET:
            return
        failed = [tp.partition for tp in partitions if error is not None or tp.error is not None]
        if failed:
            metrics.COMMIT_FAILURES.inc()
            log.warning("commit failed", extra={"error": str(error), "partitions": failed})
            for p in failed:
                self._tracker.commit_failed(p)

    def _on_error(self, error: KafkaError) -> None:
        if error.fatal():
            self._fatal = error
        log.warning("kafka error", extra={"error": str(error)})

    # -- observability
    def _update_gauges(self, now: float) -> None:
        read, skipped = self._buffers.records_read, self._buffers.skipped
        metrics.RECORDS_READ.inc(read - self._counted[0])
        metrics.SKIPPED.inc(skipped - self._counted[1])
        self._counted = (read, skipped)
        metrics.BUFFERED_BYTES.set(self._buffers.bytes)
        metrics.BUFFERED_RECORDS.set(self._buffers.records)
        metrics.BUFFERS.set(len(self._buffers))
        metrics.IN_FLIGHT_BYTES.set(self._in_flight_bytes + self._shipper.body_bytes)
        metrics.IN_FLIGHT_BATCHES.set(sum(self._in_flight.values()))
        oldest = self._buffers.oldest_opened_at()
        metrics.OLDEST_AGE.set(0.0 if oldest is None else now - oldest)
        received: dict[int, str] = {}
        for client_id, stamp in self._in_flight_received.values():
            if stamp < received.get(client_id, "\uffff"):
                received[client_id] = stamp
        self._buffers.oldest_received(received)
        metrics.OLDEST_UNLOADED.update(received)
        for p in self._tracker.partitions:
            committed = self._tracker.last_committed(p)
            if committed is None:
                continue
            try:
                _, high = self._consumer.get_watermark_offsets(
                    TopicPartition(self._topic, p), cached=True
                )
            except KafkaException:
                continue
            if high >= 0:
                metrics.LAG.labels(str(p)).set(max(0, high - committed))

    def kafka_reachable(self, timeout: float = 2.0) -> bool:
        """The topic's metadata can be read (from a client of its own: the consumer may only be
        used by the loop's thread; a metadata call beside a running consume() blocks)."""
        with self._probe_lock:
            if self._probe is None:
                self._probe = AdminClient(self.settings.kafka_config())
            try:
                meta = self._probe.list_topics(self._topic, timeout=timeout)
            except KafkaException:
                return False
        topic = meta.topics.get(self._topic)
        return topic is not None and topic.error is None
