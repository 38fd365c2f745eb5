"""Kafka's own Java tools (ProducerPerformance, ConsumerPerformance) as a benchmark baseline,
authenticated as the settings' principal."""

from __future__ import annotations

import os
import tempfile

from confluent_kafka import KafkaException

from common import kafka_admin
from common.settings import SharedSettings

STREAMERY_GROUP = os.environ.get("SKEIN_STREAMERY_GROUP_ID", kafka_admin.STREAMERY_GROUP)


def client_properties(settings: SharedSettings) -> str:
    """A 0600 properties file (--producer.config / --consumer.config) for ``settings``' principal;
    the caller removes it."""
    fd, path = tempfile.mkstemp(suffix=".properties")
    with os.fdopen(fd, "w") as f:
        for key, value in settings.kafka_java_properties().items():
            f.write(f"{key}={value}\n")
    return path


def trim_consumed(settings: SharedSettings) -> None:
    """Delete what the streamery has committed of the records topic (``skein kafka trim``), so
    benchmark after benchmark does not fill the local stack's disk (168 h retention kept 51 GB
    once, and S3 then refused uploads); print how many records went."""
    try:
        deleted = kafka_admin.trim_committed(
            kafka_admin.admin(settings), settings.topic, STREAMERY_GROUP
        )
    except KafkaException as exc:
        print(f"consumed records not trimmed: {exc}")
        return
    print(f"trimmed {deleted:,} consumed records from {settings.topic}")
