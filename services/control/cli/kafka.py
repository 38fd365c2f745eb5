"""``skein kafka``: the records topic and its ACLs."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import typer
from confluent_kafka import KafkaException

from common import kafka_admin
from common.settings import SharedSettings
from services.control.cli.shared import emit, fail

kafka_app = typer.Typer(no_args_is_help=True, help="The records topic.")


@contextmanager
def kafka_errors() -> Iterator[None]:
    """A refusal by the brokers (authentication, authorization, ...) as the JSON error."""
    try:
        yield
    except KafkaException as exc:
        fail(f"kafka: {exc}")


@kafka_app.command("ensure-topic")
def kafka_ensure_topic(
    partitions: Annotated[
        int,
        typer.Option(
            envvar="SKEIN_TOPIC_PARTITIONS",
            min=1,
            help="Partitions of the records topic if this creates it.",
        ),
    ] = 12,
) -> None:
    """Create the records topic (RF 3, min.insync.replicas 2) if it does not exist."""
    settings = SharedSettings()
    with kafka_errors():
        created = kafka_admin.ensure_topic(kafka_admin.admin(settings), settings.topic, partitions)
    emit({"topic": settings.topic, "created": created})


StreameryGroup = Annotated[
    str, typer.Option(envvar="SKEIN_STREAMERY_GROUP_ID", help="The streamery's group.")
]


@kafka_app.command("ensure-acls")
def kafka_ensure_acls(
    group: StreameryGroup = kafka_admin.STREAMERY_GROUP,
) -> None:
    """Let the gate write the records topic and the streamery read it in its group (as admin)."""
    settings = SharedSettings()
    with kafka_errors():
        acls = kafka_admin.ensure_acls(kafka_admin.admin(settings), settings.topic, group)
    emit({"topic": settings.topic, "acls": acls})


@kafka_app.command("trim")
def kafka_trim(
    group: StreameryGroup = kafka_admin.STREAMERY_GROUP,
) -> None:
    """Delete the records topic's records below the streamery's committed offsets (each is in a
    batch in S3 already: invariant 3), freeing the brokers' disk (as admin)."""
    settings = SharedSettings()
    with kafka_errors():
        deleted = kafka_admin.trim_committed(kafka_admin.admin(settings), settings.topic, group)
    emit({"topic": settings.topic, "group": group, "deleted": deleted})


@kafka_app.command("wait-ready")
def kafka_wait_ready(
    brokers: Annotated[int, typer.Option(help="Brokers that must be registered.")] = 3,
    isr: Annotated[int, typer.Option(help="In-sync replicas every partition must have.")] = 3,
    timeout: Annotated[float, typer.Option(min=1, help="Give up after this many seconds.")] = 90.0,
) -> None:
    """Wait until all brokers are registered and every partition of the topic is fully in sync."""
    settings = SharedSettings()
    try:
        state = kafka_admin.wait_ready(
            kafka_admin.admin(settings), settings.topic, brokers, isr, timeout
        )
    except TimeoutError as exc:
        fail(str(exc))
    emit({"topic": settings.topic, "brokers": state.brokers, "min_isr": state.min_isr})


@kafka_app.command("status")
def kafka_status() -> None:
    """Registered brokers and the smallest ISR of the records topic."""
    settings = SharedSettings()
    with kafka_errors():
        state = kafka_admin.topic_state(kafka_admin.admin(settings), settings.topic)
    emit(
        {
            "topic": settings.topic,
            "brokers": state.brokers,
            "partitions": len(state.partitions),
            "min_isr": state.min_isr,
        }
    )
