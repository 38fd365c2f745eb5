"""Kafka's own Java tools (ProducerPerformance, ConsumerPerformance) as a benchmark baseline,
authenticated as the settings' principal."""

from __future__ import annotations

import os
import tempfile

from common.settings import SharedSettings


def client_properties(settings: SharedSettings) -> str:
    """A 0600 properties file (--producer.config / --consumer.config) for ``settings``' principal;
    the caller removes it."""
    fd, path = tempfile.mkstemp(suffix=".properties")
    with os.fdopen(fd, "w") as f:
        for key, value in settings.kafka_java_properties().items():
            f.write(f"{key}={value}\n")
    return path
