"""Batches to S3 and the spool on a thread pool, registered in cut order per stream.

Uploads (gzip + PUT) of any batches run in parallel. Registration of one stream's batches must
follow the order they were cut in (the spool refuses a batch at or below the stream's
high-water mark), so each stream has a chain: the thread that finds the chain's head uploaded
registers it, then any uploaded successors, and hands over as soon as the head is still
uploading. No thread waits for another's upload; registrations made at the same time go to
the spool together (``_Registrations``: one request while another is under way).

Every step retries with capped exponential back-off until it succeeds or its batch is
abandoned (its partition was revoked, or shutdown gave up). While any step is failing,
``failing`` is true and the streamery stops reading. Outcomes are posted to ``completions`` for
the main loop, which alone touches offsets and buffers.
"""

from __future__ import annotations

import functools
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Collection
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from common.metrics import client_label
from common.spool_client import (
    BatchRegistration,
    SpoolConflict,
    SpoolRefused,
    SpoolUnavailable,
)
from services.streamery import metrics
from services.streamery.batch import Batch, Stream
from services.streamery.store import ObjectStore

log = logging.getLogger("skein.streamery.shipper")
T = TypeVar("T")
_FIRST_BACKOFF_S = 0.1
_LOG_EVERY = 10  # a failing step logs its first failure and then every tenth
_LOGGED_REQUEST_IDS = 100  # request ids named in a "batch registered" log line, at most
_MOST = 100  # registrations in one request, at most (the spool's MAX_BULK)


class _Abandoned(Exception):
    """The batch was abandoned while a step was retrying."""


class Registrar(Protocol):
    def register(self, batch: BatchRegistration) -> dict[str, Any]: ...

    def register_many(
        self, batches: list[BatchRegistration]
    ) -> list[dict[str, Any] | SpoolConflict | SpoolRefused]: ...

    def dead_letter(self, batch: BatchRegistration, reason: str) -> dict[str, Any]: ...

    def high_water(self, partitions: list[int]) -> dict[tuple[int, int, str], int]: ...


@dataclass
class _Pending:
    registration: BatchRegistration
    ready: threading.Event = field(default_factory=threading.Event)
    answer: dict[str, Any] | None = None
    error: Exception | None = None  # woken with neither: to send the others' registrations


class _Registrations:
    """Registrations of the upload threads made together (group commit): a thread whose
    batch is ready to register while another thread's request is under way waits, and the
    waiting ones go in one request (``register_many``: one round trip, one transaction in the
    spool) as soon as that request is answered. A lone registration goes alone (``register``).
    Each thread gets its own answer, or its own SpoolConflict or SpoolRefused, exactly as from
    ``register``, and retries on its own as before; a failed request fails each of its
    registrations only if each, sent again alone, fails too. With many small tables this turns
    ~4 registrations into one request.

    The thread sending is the leader; when its own registration is answered it hands the lead
    to the first thread still waiting, so no thread sends on for others after its batch is in.
    """

    def __init__(self, spool: Registrar) -> None:
        self._spool = spool
        self._lock = threading.Lock()
        self._waiting: deque[_Pending] = deque()
        self._sending = False

    def register(self, registration: BatchRegistration) -> dict[str, Any]:
        mine = _Pending(registration)
        with self._lock:
            self._waiting.append(mine)
            lead = not self._sending
            self._sending = True
        while True:
            if lead:
                self._send_until_answered(mine)
            mine.ready.wait()
            if mine.answer is not None or mine.error is not None:
                break
            mine.ready.clear()  # woken to lead
            lead = True
        if mine.error is not None:
            raise mine.error
        assert mine.answer is not None
        return mine.answer

    def _send_until_answered(self, mine: _Pending) -> None:
        while mine.answer is None and mine.error is None:
            with self._lock:
                group = [self._waiting.popleft() for _ in range(min(_MOST, len(self._waiting)))]
            self._send(group)
        with self._lock:
            if self._waiting:
                self._waiting[0].ready.set()  # the heir: woken without an answer, it leads
            else:
                self._sending = False

    def _send(self, group: list[_Pending]) -> None:
        answers: list[dict[str, Any] | Exception]
        if len(group) == 1:
            answers = [self._one(group[0].registration)]
        else:
            try:
                answers = list(self._spool.register_many([p.registration for p in group]))
            except Exception:
                # The request as a whole failed. One registration alone may be why (a malformed
                # one refused, or failing the spool's transaction; or a spool without the bulk
                # route): each goes alone, so it fails only its own batch.
                answers = [self._one(p.registration) for p in group]
        for pending, answer in zip(group, answers, strict=True):
            if isinstance(answer, Exception):
                pending.error = answer
            else:
                pending.answer = answer
            pending.ready.set()

    def _one(self, registration: BatchRegistration) -> dict[str, Any] | Exception:
        """``register``'s answer, or the exception it raised."""
        try:
            return self._spool.register(registration)
        except Exception as exc:
            return exc


@dataclass(frozen=True)
class Shipped:
    """A batch's outcome: registered (its records are durable) or abandoned (read again)."""

    batch: Batch
    registered: bool


@dataclass
class _Job:
    batch: Batch
    uploaded: bool = False  # the upload step finished (done, or given up as abandoned)
    upload_ok: bool = False


@dataclass
class _Chain:
    jobs: deque[_Job] = field(default_factory=deque)
    busy: bool = False  # a thread is registering this chain's jobs


class Shipper:
    def __init__(
        self,
        store: ObjectStore,
        spool: Registrar,
        *,
        workers: int,
        gzip_level: int,
        backoff_max_s: float,
    ) -> None:
        self._store = store
        self._spool = spool
        self._registrations = _Registrations(spool)
        self._level = gzip_level
        self._backoff_max_s = backoff_max_s
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="shipper")
        self._lock = threading.Lock()
        self._chains: dict[Stream, _Chain] = {}
        self._failing = 0
        self._body_bytes = 0
        self._ratio = 1.0  # object size / buffered size of the last batch compressed
        self.completions: queue.SimpleQueue[Shipped] = queue.SimpleQueue()

    @property
    def failing(self) -> bool:
        """Some step is failing right now (S3 or the spool unreachable or refusing)."""
        return self._failing > 0

    @property
    def body_bytes(self) -> int:
        """Objects held in memory while they are compressed and uploaded."""
        return self._body_bytes

    def ship(self, batch: Batch) -> None:
        job = _Job(batch)
        with self._lock:
            self._chains.setdefault(batch.stream, _Chain()).jobs.append(job)
        self._pool.submit(self._run, job)

    def abandon(self, partitions: Collection[int] | None = None) -> None:
        """Stop retrying the batches of these partitions (all when None): each is reported as
        not registered, unless a registration already under way completes."""
        with self._lock:
            for stream, chain in self._chains.items():
                if partitions is None or stream.partition in partitions:
                    for job in chain.jobs:
                        job.batch.abandoned.set()

    def close(self) -> None:
        """Abandon everything and let the threads go (a PUT in progress may still finish)."""
        self.abandon()
        self._pool.shutdown(wait=False, cancel_futures=True)

    # -- one job on a pool thread
    def _run(self, job: _Job) -> None:
        try:
            job.upload_ok = self._upload(job.batch)
        except Exception:  # a bug: never leave the chain stuck
            log.exception("upload step crashed", extra={"object_key": job.batch.object_key})
        self._uploaded(job)

    def _upload(self, batch: Batch) -> bool:
        if batch.abandoned.is_set():
            return False
        # The object grows while it is compressed: hold its expected size from the start (the
        # last ratio seen, at least a tenth), then its real size until the PUT is done.
        expected = max(len(m.value) for m in batch.messages) + int(batch.memory * self._ratio)
        self._hold(expected)
        try:
            body = batch.body(self._level)
        except BaseException:
            self._hold(-expected)
            raise
        self._hold(len(body) - expected)
        self._ratio = max(0.1, len(body) / max(1, batch.memory))
        try:
            began = time.monotonic()
            self._retry(batch, "upload", lambda: self._store.put(batch.object_key, body))
        except _Abandoned:
            return False
        finally:
            self._hold(-len(body))
        metrics.UPLOAD_SECONDS.observe(time.monotonic() - began)
        metrics.BYTES_WRITTEN.labels(client_label(batch.stream.client_id)).inc(len(body))
        batch.object_bytes = len(body)
        return True

    def _uploaded(self, job: _Job) -> None:
        stream = job.batch.stream
        with self._lock:
            job.uploaded = True
            chain = self._chains[stream]
            if chain.busy:
                return  # the registering thread will reach this job
            chain.busy = True
        while True:
            with self._lock:
                if not chain.jobs or not chain.jobs[0].uploaded:
                    chain.busy = False
                    if not chain.jobs:
                        del self._chains[stream]
                    return
                head = chain.jobs[0]
            try:
                registered = self._register(head)
            except Exception:
                log.exception("register step crashed", extra={"object_key": head.batch.object_key})
                registered = False
            with self._lock:
                chain.jobs.popleft()
            self.completions.put(Shipped(head.batch, registered))

    def _register(self, job: _Job) -> bool:
        batch = job.batch
        if not job.upload_ok:
            return False
        if batch.unreadable:
            return True  # kept for an operator, never loaded
        while True:
            try:
                began = time.monotonic()
                registration = batch.registration()
                answer = self._retry(
                    batch, "register", functools.partial(self._registrations.register, registration)
                )
                metrics.REGISTER_SECONDS.observe(time.monotonic() - began)
                metrics.BATCHES_REGISTERED.inc()
                metrics.RECORDS_REGISTERED.labels(client_label(batch.stream.client_id)).inc(
                    batch.record_count
                )
                # One line per batch: the link from the gate's request ids to the batch id.
                log.info(
                    "batch registered",
                    extra={
                        "batch_id": answer.get("batch_id"),
                        "object_key": registration.object_key,
                        "client_id": registration.client_id,
                        "records": registration.record_count,
                        "request_ids": list(registration.request_ids[:_LOGGED_REQUEST_IDS]),
                    },
                )
                return True
            except SpoolRefused as exc:
                # A batch that can never register (its client does not exist: a forged or stale
                # message) is kept as a dead row, its object stays in S3, and its offsets are
                # committed: one poison message must not stop consumption for every client.
                metrics.REGISTRATION_FAILURES.labels("refused").inc()
                reason = str(exc)
                try:
                    answer = self._retry(
                        batch,
                        "dead-letter",
                        functools.partial(self._dead_letter, registration, reason),
                    )
                except _Abandoned:
                    return False
                log.error(
                    "batch refused by the spool: dead-lettered",
                    extra={
                        "batch_id": answer.get("batch_id"),
                        "object_key": registration.object_key,
                        "client_id": registration.client_id,
                        "reason": reason,
                    },
                )
                return True
            except SpoolConflict as exc:
                # Another writer (a consumer this partition moved away from) registered some of
                # these offsets after our marks were read: keep only what is above its mark.
                metrics.REGISTRATION_FAILURES.labels("conflict").inc()
                if not self._trim(batch, str(exc)):
                    return not batch.abandoned.is_set()
                if not self._upload(batch):
                    return False
            except _Abandoned:
                return False

    def _dead_letter(self, registration: BatchRegistration, reason: str) -> dict[str, Any]:
        try:
            return self._spool.dead_letter(registration, reason)
        except SpoolRefused as refused:  # retried with back-off (_retry), never dropped
            raise RuntimeError(str(refused)) from refused

    def _trim(self, batch: Batch, reason: str) -> bool:
        """Drop what the stream's mark covers; False when nothing is left (or abandoned)."""
        s = batch.stream
        try:
            marks = self._retry(batch, "high-water", lambda: self._spool.high_water([s.partition]))
        except _Abandoned:
            return False
        mark = marks.get((s.partition, s.client_id, s.table_name), -1)
        if mark < batch.first_offset:
            # Refused, yet nothing of ours is covered: not a state we can reason about. Wait
            # and try again rather than spin; the failure shows in the metrics and the log.
            log.error(
                "registration refused below no mark; retrying",
                extra={"object_key": batch.object_key, "mark": mark, "reason": reason},
            )
            batch.abandoned.wait(self._backoff_max_s)
            return True
        log.warning(
            "registration conflict: keeping only offsets above the stream's mark",
            extra={"object_key": batch.object_key, "mark": mark, "reason": reason},
        )
        return batch.keep_after(mark)

    # -- retries
    def _retry(self, batch: Batch, step: str, attempt: Callable[[], T]) -> T:
        """``attempt()`` until it succeeds (its result) or the batch is abandoned (_Abandoned).
        A SpoolConflict is not a failure to retry: it goes to the caller."""
        delay = _FIRST_BACKOFF_S
        failures = 0
        try:
            while not batch.abandoned.is_set():
                try:
                    result = attempt()
                except (SpoolConflict, SpoolRefused):
                    raise
                except Exception as exc:
                    failures += 1
                    if failures == 1:
                        self._fail(+1)
                    self._count_failure(step, exc)
                    if failures % _LOG_EVERY == 1:
                        log.warning(
                            f"{step} failed; retrying",
                            extra={
                                "object_key": batch.object_key,
                                "attempt": failures,
                                "error": f"{type(exc).__name__}: {exc}",
                            },
                        )
                    batch.abandoned.wait(delay)
                    delay = min(delay * 2, self._backoff_max_s)
                    continue
                if failures:
                    log.info(
                        f"{step} recovered",
                        extra={"object_key": batch.object_key, "attempts": failures + 1},
                    )
                return result
            raise _Abandoned
        finally:
            if failures:
                self._fail(-1)

    @staticmethod
    def _count_failure(step: str, exc: Exception) -> None:
        if step == "upload":
            metrics.UPLOAD_FAILURES.inc()
        else:
            kind = "unavailable" if isinstance(exc, SpoolUnavailable) else "refused"
            metrics.REGISTRATION_FAILURES.labels(kind).inc()

    def _fail(self, delta: int) -> None:
        with self._lock:
            self._failing += delta

    def _hold(self, delta: int) -> None:
        with self._lock:
            self._body_bytes += delta
