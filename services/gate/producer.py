"""An asyncio face on librdkafka's idempotent producer: await delivery of every message.

A background thread serves delivery reports (they fire only inside ``poll``) and resolves each
request's futures on the event loop. A request is acknowledged only when all of its messages
are reported delivered with ``acks=all`` on a topic with ``min.insync.replicas=2``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from confluent_kafka import KafkaError, KafkaException, Message, Producer


class NotDelivered(Exception):
    """Kafka did not acknowledge every message in time; the client must retry."""


@dataclass(frozen=True)
class OutgoingMessage:
    key: bytes
    value: bytes
    headers: list[tuple[str, str | bytes | None]]


class DurableProducer:
    def __init__(self, config: dict[str, object], topic: str) -> None:
        base: dict[str, object] = {
            "enable.idempotence": True,
            "acks": "all",
            "max.in.flight.requests.per.connection": 5,
        }
        self._producer = Producer({**base, **config})
        self._topic = topic
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._poll_loop, name="kafka-poll", daemon=True)
        self._poller.start()

    def _poll_loop(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.05)

    async def send(self, messages: Sequence[OutgoingMessage], timeout: float) -> None:
        """Produce ``messages`` in order; return once all are acknowledged, else NotDelivered."""
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[None]] = []

        def resolver(future: asyncio.Future[None]):  # type: ignore[no-untyped-def]
            def on_delivery(err: KafkaError | None, _msg: Message) -> None:
                loop.call_soon_threadsafe(_settle, future, err)

            return on_delivery

        deadline = time.monotonic() + timeout
        for message in messages:
            future: asyncio.Future[None] = loop.create_future()
            while True:
                try:
                    self._producer.produce(
                        self._topic,
                        value=message.value,
                        key=message.key,
                        headers=message.headers,
                        on_delivery=resolver(future),
                    )
                    break
                except BufferError:
                    # The local queue is full: wait briefly for it to drain, within the deadline.
                    if time.monotonic() > deadline:
                        _abandon(futures)
                        raise NotDelivered("the producer queue is full") from None
                    await asyncio.sleep(0.01)
                except KafkaException as exc:
                    _abandon(futures)
                    raise NotDelivered(str(exc)) from exc
            futures.append(future)
        try:
            await asyncio.wait_for(
                asyncio.gather(*futures), timeout=max(0.0, deadline - time.monotonic())
            )
        except TimeoutError as exc:
            raise NotDelivered("Kafka did not acknowledge the records in time") from exc
        except KafkaException as exc:
            raise NotDelivered(str(exc.args[0] if exc.args else exc)) from exc

    def reachable(self, timeout: float = 2.0) -> bool:
        try:
            meta = self._producer.list_topics(self._topic, timeout=timeout)
        except KafkaException:
            return False
        topic = meta.topics.get(self._topic)
        return bool(meta.brokers) and topic is not None and topic.error is None

    def close(self, timeout: float = 30.0) -> int:
        """Flush what is queued (graceful shutdown); return how many messages were left."""
        self._stop.set()
        self._poller.join(timeout=5)
        return int(self._producer.flush(timeout))


def _settle(future: asyncio.Future[None], err: KafkaError | None) -> None:
    if future.done():
        return
    if err is None:
        future.set_result(None)
    else:
        future.set_exception(KafkaException(err))


def _abandon(futures: list[asyncio.Future[None]]) -> None:
    # Reports for already-queued messages still arrive later; nobody awaits them now.
    for f in futures:
        if not f.done():
            f.cancel()
