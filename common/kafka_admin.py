"""Topic administration and readiness checks for the records topic."""

from __future__ import annotations

import time
from dataclasses import dataclass

from confluent_kafka import ConsumerGroupTopicPartitions, KafkaException, TopicPartition
from confluent_kafka.admin import (
    AclBinding,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ConfigResource,
    NewTopic,
    OffsetSpec,
    ResourcePatternType,
    ResourceType,
)

from common.settings import SharedSettings

REPLICATION_FACTOR = 3
MIN_INSYNC_REPLICAS = 2


@dataclass(frozen=True)
class TopicState:
    brokers: list[int]
    partitions: dict[int, list[int]]  # partition -> in-sync replica ids

    @property
    def min_isr(self) -> int:
        return min((len(isr) for isr in self.partitions.values()), default=0)


def admin(settings: SharedSettings) -> AdminClient:
    """An admin client as ``settings``' principal (``admin`` for ``skein kafka ...``)."""
    return AdminClient(settings.kafka_config(**{"socket.timeout.ms": 5000}))


def topic_state(client: AdminClient, topic: str, timeout: float = 5.0) -> TopicState:
    """Registered brokers and each partition's ISR (empty partitions if the topic is absent)."""
    meta = client.list_topics(topic=topic, timeout=timeout)
    brokers = sorted(meta.brokers)
    tmeta = meta.topics.get(topic)
    if tmeta is None or tmeta.error is not None:
        return TopicState(brokers, {})
    return TopicState(brokers, {p.id: sorted(p.isrs) for p in tmeta.partitions.values()})


def ensure_topic(client: AdminClient, topic: str, partitions: int) -> bool:
    """Create the records topic (RF 3, min.insync.replicas 2) unless it exists; True if created."""
    existing = client.list_topics(timeout=10).topics
    if topic in existing:
        return False
    new = NewTopic(
        topic,
        num_partitions=partitions,
        replication_factor=REPLICATION_FACTOR,
        config={"min.insync.replicas": str(MIN_INSYNC_REPLICAS)},
    )
    try:
        client.create_topics([new], request_timeout=30)[topic].result(timeout=30)
    except KafkaException as exc:
        if "TOPIC_ALREADY_EXISTS" not in str(exc):
            raise
        return False
    return True


def _described(client: AdminClient, resource: ConfigResource) -> dict[str, str]:
    configs = client.describe_configs([resource])[resource].result(timeout=10)
    return {name: entry.value for name, entry in configs.items()}


def topic_config(client: AdminClient, topic: str) -> dict[str, str]:
    return _described(client, ConfigResource(ResourceType.TOPIC, topic))


def broker_config(client: AdminClient, broker_id: int) -> dict[str, str]:
    return _described(client, ConfigResource(ResourceType.BROKER, str(broker_id)))


def wait_ready(
    client: AdminClient, topic: str, brokers: int = 3, isr: int = 3, timeout: float = 90.0
) -> TopicState:
    """Poll until ``brokers`` are registered and every partition's ISR has ``isr`` members.

    ``isr=0`` waits for the brokers only (the topic may not exist yet).
    """
    deadline = time.monotonic() + timeout
    last: TopicState | None = None
    while True:
        try:
            last = topic_state(client, topic)
            topic_ok = isr == 0 or (last.partitions and last.min_isr >= isr)
            if len(last.brokers) >= brokers and topic_ok:
                return last
        except KafkaException:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"Kafka not ready within {timeout:.0f}s: {last}")
        time.sleep(0.5)


_EARLIEST = OffsetSpec.earliest()  # type: ignore[no-untyped-call]
STREAMERY_GROUP = "skein-streamery"  # the streamery's consumer group, unless configured


def trim_committed(client: AdminClient, topic: str, group: str, timeout: float = 30.0) -> int:
    """Delete ``topic``'s records below ``group``'s committed offsets, partition by partition,
    and return how many went. Below its committed offsets the streamery has made every record
    part of a batch in S3, queued in the spool, and nothing reads them from Kafka again; time
    retention (168 h) would otherwise keep every benchmark's records on a local stack's disk.
    Nothing at or above a committed offset, and nothing of a partition without one, is touched.
    """
    state = topic_state(client, topic)
    if not state.partitions:
        return 0  # no such topic (or no metadata yet): nothing to trim
    asked = ConsumerGroupTopicPartitions(
        group, [TopicPartition(topic, p) for p in state.partitions]
    )
    [offsets] = client.list_consumer_group_offsets([asked], request_timeout=timeout).values()
    committed = [tp for tp in offsets.result(timeout).topic_partitions if tp.offset > 0]
    if not committed:
        return 0
    earliest = client.list_offsets(
        {TopicPartition(tp.topic, tp.partition): _EARLIEST for tp in committed},
        request_timeout=timeout,
    )
    before = {(tp.topic, tp.partition): f.result(timeout).offset for tp, f in earliest.items()}
    deleted, failed = 0, []
    for tp, future in client.delete_records(committed, request_timeout=timeout).items():
        try:
            low = future.result(timeout).low_watermark
        except KafkaException as exc:
            failed.append(f"{tp.partition}: {exc}")
            continue
        deleted += max(0, low - before[(tp.topic, tp.partition)])
    if failed:
        raise KafkaException(f"{deleted} records trimmed; partitions not trimmed: {failed}")
    return deleted


# What each service principal may do (docs/architecture.md, Security). broker, controller and
# admin are the brokers' super users; every other principal, anonymous included, gets nothing.
GATE_PRINCIPAL = "User:gate"
STREAMERY_PRINCIPAL = "User:streamery"


def service_acls(topic: str, streamery_group: str) -> list[AclBinding]:
    """gate: write (and describe) the records topic; streamery: read it, in its own group."""

    def allow(principal: str, kind: ResourceType, name: str, op: AclOperation) -> AclBinding:
        return AclBinding(
            kind, name, ResourcePatternType.LITERAL, principal, "*", op, AclPermissionType.ALLOW
        )

    return [
        allow(GATE_PRINCIPAL, ResourceType.TOPIC, topic, AclOperation.WRITE),
        allow(GATE_PRINCIPAL, ResourceType.TOPIC, topic, AclOperation.DESCRIBE),
        allow(STREAMERY_PRINCIPAL, ResourceType.TOPIC, topic, AclOperation.READ),
        allow(STREAMERY_PRINCIPAL, ResourceType.TOPIC, topic, AclOperation.DESCRIBE),
        allow(STREAMERY_PRINCIPAL, ResourceType.GROUP, streamery_group, AclOperation.READ),
        allow(STREAMERY_PRINCIPAL, ResourceType.GROUP, streamery_group, AclOperation.DESCRIBE),
    ]


def ensure_acls(client: AdminClient, topic: str, streamery_group: str) -> list[str]:
    """Create the service principals' ACLs (creating an existing one changes nothing)."""
    bindings = service_acls(topic, streamery_group)
    for future in client.create_acls(bindings, request_timeout=30).values():
        future.result(timeout=30)
    return [f"{b.principal} {b.operation} {b.restype} {b.name}" for b in bindings]
