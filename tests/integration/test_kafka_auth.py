"""Kafka lets in only the platform's principals, each for its own job (docs/architecture.md,
Security): anonymous clients and wrong passwords are refused; the streamery cannot write the
records topic, the gate cannot read it; reading the records topic from the offsets taken before
each attempt shows none of the forged messages got in (the stack's own writers may add records
meanwhile, so the offsets alone prove nothing)."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from pydantic import SecretStr

from common.settings import SharedSettings
from support.stack import ROOT

SECRETS = Path(os.environ.get("SKEIN_RUN_DIR", ROOT / ".run")) / "secrets"
FORGED = f"forged-{uuid.uuid4()}".encode()
AUTHORIZATION_FAILED = {
    KafkaError.TOPIC_AUTHORIZATION_FAILED,
    KafkaError.CLUSTER_AUTHORIZATION_FAILED,
    KafkaError.GROUP_AUTHORIZATION_FAILED,
    KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
}


def as_principal(
    settings: SharedSettings, name: str, password: str | None = None
) -> SharedSettings:
    """The settings of the stack's ``name`` principal (its password from .run/secrets)."""
    secret = password if password is not None else (SECRETS / f"kafka-{name}").read_text()
    return settings.model_copy(update={"kafka_username": name, "kafka_password": SecretStr(secret)})


def anonymous(settings: SharedSettings) -> dict[str, Any]:
    return {"bootstrap.servers": settings.kafka_bootstrap}


def end_offsets(settings: SharedSettings) -> dict[int, int]:
    consumer = Consumer(settings.kafka_config(**{"group.id": f"test-{uuid.uuid4()}"}))
    try:
        parts = consumer.list_topics(settings.topic, timeout=10).topics[settings.topic].partitions
        return {
            p: consumer.get_watermark_offsets(TopicPartition(settings.topic, p), timeout=10)[1]
            for p in parts
        }
    finally:
        consumer.close()


def forged_since(settings: SharedSettings, before: dict[int, int]) -> int:
    """How many ``FORGED`` messages sit in the records topic past the ``before`` offsets."""
    after = end_offsets(settings)
    consumer = Consumer(
        settings.kafka_config(**{"group.id": f"test-{uuid.uuid4()}", "enable.auto.commit": False})
    )
    pending = {p for p in before if after[p] > before[p]}
    try:
        consumer.assign([TopicPartition(settings.topic, p, before[p]) for p in pending])
        forged, deadline = 0, time.monotonic() + 30
        while pending and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if (
                message is not None
                and not message.error()
                and message.offset() < after[message.partition()]
            ):
                forged += message.value() == FORGED
            positions = consumer.position([TopicPartition(settings.topic, p) for p in pending])
            pending -= {tp.partition for tp in positions if tp.offset >= after[tp.partition]}
        assert not pending, f"could not read partitions {pending} up to {after}"
        return forged
    finally:
        consumer.close()


def try_produce(config: dict[str, Any], topic: str) -> KafkaError | None:
    """Send one message to every partition; the first delivery error, or None if all landed."""
    errors: list[KafkaError] = []
    producer = Producer(
        {**config, "acks": "all", "enable.idempotence": False, "message.timeout.ms": 8000}
    )
    for partition in range(12):
        producer.produce(
            topic,
            FORGED,
            partition=partition,
            on_delivery=lambda err, _msg: errors.append(err) if err else None,
        )
    producer.flush(20)
    return errors[0] if errors else None


def test_an_anonymous_producer_cannot_write_the_records_topic(settings: SharedSettings) -> None:
    before = end_offsets(settings)
    error = try_produce(anonymous(settings), settings.topic)
    assert error is not None  # the SASL listener drops a PLAINTEXT client: nothing is delivered
    assert forged_since(settings, before) == 0


def test_an_anonymous_client_cannot_even_read_metadata(settings: SharedSettings) -> None:
    with pytest.raises(KafkaException):
        AdminClient({**anonymous(settings), "socket.timeout.ms": 3000}).list_topics(timeout=5)


def test_a_wrong_password_is_refused(settings: SharedSettings) -> None:
    wrong = as_principal(settings, "gate", password="not-the-password")
    before = end_offsets(settings)
    error = try_produce(wrong.kafka_config(), settings.topic)
    assert error is not None
    assert forged_since(settings, before) == 0


def test_the_streamery_cannot_write_the_records_topic(settings: SharedSettings) -> None:
    streamery = as_principal(settings, "streamery")
    before = end_offsets(settings)
    error = try_produce(streamery.kafka_config(), settings.topic)
    assert error is not None and error.code() in AUTHORIZATION_FAILED, error
    assert forged_since(settings, before) == 0


def test_the_gate_cannot_read_the_records_topic_or_create_topics(
    settings: SharedSettings,
) -> None:
    gate = as_principal(settings, "gate")  # (the whole suite shows it writes: the stack's gate)
    admin = AdminClient(gate.kafka_config())
    topic = f"skein.test.{uuid.uuid4().hex[:8]}"
    with pytest.raises(KafkaException) as refused:
        admin.create_topics([NewTopic(topic, 1, 3)])[topic].result(30)
    assert refused.value.args[0].code() in AUTHORIZATION_FAILED
    consumer = Consumer(
        gate.kafka_config(**{"group.id": "skein-streamery", "auto.offset.reset": "earliest"})
    )
    try:
        consumer.assign([TopicPartition(settings.topic, 0, 0)])
        message = consumer.poll(15)
        assert message is not None and message.error() is not None
        assert message.error().code() in AUTHORIZATION_FAILED, message.error()
    finally:
        consumer.close()


def test_the_streamery_reads_only_in_its_own_group(settings: SharedSettings) -> None:
    streamery = as_principal(settings, "streamery")
    consumer = Consumer(streamery.kafka_config(**{"group.id": f"other-{uuid.uuid4()}"}))
    try:
        consumer.subscribe([settings.topic])
        error = None
        deadline = time.monotonic() + 20
        while error is None and time.monotonic() < deadline:
            message = consumer.poll(1)
            if message is not None:
                error = message.error()
                assert error is not None, "the streamery consumed in a group not its own"
        assert error is not None and error.code() in AUTHORIZATION_FAILED, error
    finally:
        consumer.close()
