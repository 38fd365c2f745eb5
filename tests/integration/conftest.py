from __future__ import annotations

from collections.abc import Iterator

import pytest
from confluent_kafka.admin import AdminClient

from common import kafka_admin
from common.settings import SharedSettings
from support.stack import stack


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def settings() -> SharedSettings:
    return SharedSettings()


@pytest.fixture(scope="session")
def admin(settings: SharedSettings) -> AdminClient:
    client = kafka_admin.admin(settings)
    kafka_admin.wait_ready(client, settings.topic, timeout=120)
    return client


@pytest.fixture
def brokers_restored(settings: SharedSettings, admin: AdminClient) -> Iterator[None]:
    """Whatever a test does to the brokers, all three run and are in sync afterwards."""
    yield
    for node in (1, 2, 3):
        stack("kafka-start", str(node))
    kafka_admin.wait_ready(admin, settings.topic, timeout=180)
