"""The three-broker cluster keeps the promise the gate builds on: acks=all on RF 3 / min ISR 2."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from confluent_kafka import (
    Consumer,
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic, OffsetSpec

from common import kafka_admin
from common.settings import SharedSettings
from support import cli
from support.stack import stack, wait_for


def durable_producer(settings: SharedSettings, timeout_ms: int = 10_000) -> Producer:
    return Producer(
        {
            **settings.kafka_config(),
            "enable.idempotence": True,
            "acks": "all",
            "message.timeout.ms": timeout_ms,
        }
    )


@pytest.fixture(scope="module")
def probe_topic(settings: SharedSettings, admin: AdminClient) -> Iterator[str]:
    """A topic like the records topic (RF 3, min ISR 2) for raw probe messages, so the pipeline
    never sees them."""
    name = f"skein.test.cluster.{uuid.uuid4().hex[:8]}"
    admin.create_topics([NewTopic(name, 12, 3, config={"min.insync.replicas": "2"})])[name].result(
        30
    )
    kafka_admin.wait_ready(admin, name, timeout=60)
    yield name
    admin.delete_topics([name])[name].result(30)


def produce_all_partitions(
    settings: SharedSettings, topic: str, partitions: int, timeout_ms: int = 10_000
) -> dict[int, KafkaError | str | None]:
    """Produce one message to each partition; map partition -> delivery error (None = delivered)."""
    producer = durable_producer(settings, timeout_ms)
    outcome: dict[int, KafkaError | str | None] = {p: "no report" for p in range(partitions)}

    def report(err: KafkaError | None, msg: object) -> None:
        outcome[msg.partition()] = err  # type: ignore[attr-defined]

    for p in range(partitions):
        producer.produce(topic, value=uuid.uuid4().bytes, partition=p, on_delivery=report)
    producer.flush(timeout_ms / 1000 + 10)
    return outcome


def test_topic_has_the_durability_settings(settings: SharedSettings, admin: AdminClient) -> None:
    state = kafka_admin.topic_state(admin, settings.topic)
    assert state.brokers == [1, 2, 3]
    assert len(state.partitions) == 12
    assert state.min_isr == 3
    config = kafka_admin.topic_config(admin, settings.topic)
    assert config["min.insync.replicas"] == "2"
    broker_config = kafka_admin.broker_config(admin, 1)
    assert broker_config["auto.create.topics.enable"] == "false"


def test_acks_all_produce_succeeds_with_three_brokers(
    settings: SharedSettings, admin: AdminClient, probe_topic: str
) -> None:
    outcome = produce_all_partitions(settings, probe_topic, 12)
    assert outcome == dict.fromkeys(range(12))


def min_isr(admin: AdminClient, topic: str) -> int | None:
    """The topic's smallest ISR, or None while metadata times out (a broker just died)."""
    try:
        return kafka_admin.topic_state(admin, topic).min_isr
    except KafkaException:
        return None


@pytest.mark.slow
def test_one_broker_killed_writes_continue_and_isr_recovers(
    settings: SharedSettings, admin: AdminClient, probe_topic: str, brokers_restored: None
) -> None:
    stack("kafka-kill", "3")
    wait_for(
        lambda: min_isr(admin, settings.topic) == 2,
        timeout=60,
        what="ISR to shrink to two after SIGKILL of broker 3",
    )
    assert produce_all_partitions(settings, probe_topic, 12) == dict.fromkeys(range(12))

    stack("kafka-start", "3")
    wait_for(
        lambda: min_isr(admin, settings.topic) == 3,
        timeout=120,
        what="ISR to return to three after restarting broker 3",
    )


@pytest.mark.slow
def test_two_brokers_down_produce_is_not_acknowledged(
    settings: SharedSettings, admin: AdminClient, probe_topic: str, brokers_restored: None
) -> None:
    stack("kafka-kill", "2")
    stack("kafka-kill", "3")
    outcome = produce_all_partitions(settings, probe_topic, 12, timeout_ms=8_000)
    delivered = [p for p, err in outcome.items() if err is None]
    assert delivered == [], f"partitions acknowledged with two of three brokers down: {delivered}"
    assert all(isinstance(err, KafkaError) for err in outcome.values())


@pytest.mark.slow
def test_full_restart_keeps_the_topic_data(
    settings: SharedSettings, admin: AdminClient, probe_topic: str
) -> None:
    marker = f"survives-restart-{uuid.uuid4()}".encode()
    producer = durable_producer(settings)
    delivered: list[tuple[int, int]] = []
    producer.produce(
        probe_topic,
        value=marker,
        partition=5,
        on_delivery=lambda err, msg: (
            delivered.append((msg.partition(), msg.offset())) if err is None else None
        ),
    )
    producer.flush(15)
    assert len(delivered) == 1

    stack("kafka-restart", timeout=300)  # every node stopped, then started (services stay up)

    consumer = Consumer(
        {
            **settings.kafka_config(),
            "group.id": f"test-{uuid.uuid4()}",
            "enable.auto.commit": False,
        }
    )
    try:
        consumer.assign([TopicPartition(probe_topic, *delivered[0])])
        message = wait_for(consumer.poll, timeout=60, interval=0, what="the message after restart")
        assert message.error() is None
        assert message.value() == marker
    finally:
        consumer.close()


def test_trimming_deletes_only_what_the_group_committed(
    settings: SharedSettings, admin: AdminClient
) -> None:
    """``kafka_admin.trim_committed`` (run after the benchmarks): records below the group's
    committed offset go; those at or above it, a partition committed at 0 and one the group
    never committed stay; a topic that is not there trims nothing."""
    topic = f"skein.test.trim.{uuid.uuid4().hex[:8]}"
    group = f"skein-test-trim-{uuid.uuid4().hex[:8]}"
    assert kafka_admin.trim_committed(admin, topic, group) == 0  # no such topic yet
    admin.create_topics([NewTopic(topic, 4, 3, config={"min.insync.replicas": "2"})])[topic].result(
        30
    )
    try:
        kafka_admin.wait_ready(admin, topic, timeout=60)
        producer = durable_producer(settings)
        for partition in range(4):
            for _ in range(10):
                producer.produce(topic, value=b"x", partition=partition)
        assert producer.flush(30) == 0
        commits = [
            TopicPartition(topic, 0, 6),
            TopicPartition(topic, 1, 10),
            TopicPartition(topic, 3, 0),
        ]  # 2: none
        [done] = admin.alter_consumer_group_offsets(
            [ConsumerGroupTopicPartitions(group, commits)]
        ).values()
        done.result(30)

        assert kafka_admin.trim_committed(admin, topic, group) == 16
        # as an operator runs it: nothing more to trim
        trimmed = cli.ok("kafka", "trim", "--group", group, env={"SKEIN_TOPIC": topic})
        assert trimmed == {"topic": topic, "group": group, "deleted": 0}

        earliest = admin.list_offsets(
            {TopicPartition(topic, p): OffsetSpec.earliest() for p in range(4)}
        )
        assert {tp.partition: f.result(30).offset for tp, f in earliest.items()} == {
            0: 6,
            1: 10,
            2: 0,
            3: 0,
        }
        # what is left is still read: partition 0 from offset 6
        consumer = Consumer(settings.kafka_config(**{"group.id": group}))
        consumer.assign([TopicPartition(topic, 0, 6)])
        read = [consumer.poll(10) for _ in range(4)]
        consumer.close()
        assert [m.offset() for m in read if m is not None and not m.error()] == [6, 7, 8, 9]
    finally:
        admin.delete_topics([topic])[topic].result(30)
