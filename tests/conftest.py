"""Suite-wide settings and collection order. The helpers the suites share (the stack, its
clients, polling with a deadline) live in the top-level ``support`` package."""

from __future__ import annotations

import os

import pytest

from support.stack import use_stack_passwords

# The test suite's fakes (fakesnow, the BigQuery emulator, hanging listeners, a second warehouse
# database on the control cluster) listen on loopback ports: destinations set, and loaders
# started, by the tests may reach any of them. The platform's own addresses (the control
# database, Kafka, S3, the spool) stay refused whatever this says; the network-policy tests
# build their own policies. (`make up`'s services keep the local default, 127.0.0.1:5433.)
os.environ.setdefault("SKEIN_DESTINATION_ALLOWED_NETWORKS", "127.0.0.0/8")
# The tests' own connections to the stack's Postgres clusters find their generated passwords
# in the libpq password file `make up` writes. Destinations store theirs: demo_warehouse_secrets.
use_stack_passwords()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """BigQuery emulator and Helm tests last: on a machine without them cached, `.ci/run` builds
    both in the background (~12 min and ~3 min cold) while every other suite runs."""
    items.sort(key=lambda item: "bigquery" in item.nodeid or "test_helm" in item.nodeid)
