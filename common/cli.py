"""``skein``: the operators' CLI. Every command prints one JSON object on stdout."""

from __future__ import annotations

import sys
from contextlib import closing
from typing import Annotated, Any

import orjson
import typer

from common import db, kafka_admin
from common import migrate as migrations
from common.settings import SharedSettings

app = typer.Typer(
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False, help=__doc__
)
db_app = typer.Typer(no_args_is_help=True, help="Control database.")
kafka_app = typer.Typer(no_args_is_help=True, help="The records topic.")
app.add_typer(db_app, name="db")
app.add_typer(kafka_app, name="kafka")


def emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(orjson.dumps(obj).decode() + "\n")


def fail(message: str, code: int = 1) -> None:
    emit({"error": message})
    raise typer.Exit(code)


@db_app.command("migrate")
def db_migrate() -> None:
    """Apply pending migrations to the control database, in order, once each."""
    with closing(db.connect()) as conn:
        try:
            applied = migrations.migrate(conn)
        except migrations.MigrationError as exc:
            fail(str(exc))
    emit({"applied": [f"{m.version:04d}_{m.name}" for m in applied]})


@db_app.command("status")
def db_status() -> None:
    """List migrations and whether each is applied."""
    with closing(db.connect()) as conn:
        rows = migrations.status(conn)
    emit({"migrations": [{"version": v, "name": n, "applied": a} for v, n, a in rows]})


@kafka_app.command("ensure-topic")
def kafka_ensure_topic(
    partitions: Annotated[int, typer.Option(envvar="SKEIN_TOPIC_PARTITIONS", min=1)] = 12,
) -> None:
    """Create the records topic (RF 3, min.insync.replicas 2) if it does not exist."""
    settings = SharedSettings()
    created = kafka_admin.ensure_topic(
        kafka_admin.admin(settings.kafka_bootstrap), settings.topic, partitions
    )
    emit({"topic": settings.topic, "created": created})


@kafka_app.command("wait-ready")
def kafka_wait_ready(
    brokers: int = 3, isr: int = 3, timeout: Annotated[float, typer.Option(min=1)] = 90.0
) -> None:
    """Wait until all brokers are registered and every partition of the topic is fully in sync."""
    settings = SharedSettings()
    try:
        state = kafka_admin.wait_ready(
            kafka_admin.admin(settings.kafka_bootstrap), settings.topic, brokers, isr, timeout
        )
    except TimeoutError as exc:
        fail(str(exc))
    emit({"topic": settings.topic, "brokers": state.brokers, "min_isr": state.min_isr})


@kafka_app.command("status")
def kafka_status() -> None:
    """Registered brokers and the smallest ISR of the records topic."""
    settings = SharedSettings()
    state = kafka_admin.topic_state(kafka_admin.admin(settings.kafka_bootstrap), settings.topic)
    emit(
        {
            "topic": settings.topic,
            "brokers": state.brokers,
            "partitions": len(state.partitions),
            "min_isr": state.min_isr,
        }
    )


def main() -> None:
    app()
