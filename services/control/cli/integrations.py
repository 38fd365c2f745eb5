"""``skein integrations``: Singer taps the extractor runs (services/extractor/)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import orjson
import typer

from common import control
from services.control import integrations
from services.control.cli.shared import control_db, emit, fail, pairs, require_client

integrations_app = typer.Typer(
    no_args_is_help=True, help="Singer taps the extractor runs on a schedule (integrations)."
)


@contextmanager
def integrations_db() -> Iterator[control.Connection]:
    with control_db() as conn, integrations.refusals():
        yield conn


def split_values(values: list[str] | None) -> list[str]:
    """Repeated options and comma-separated lists alike: ``--select a,b --select c``."""
    return [v.strip() for value in values or [] for v in value.split(",") if v.strip()]


@integrations_app.command("add")
def integrations_add(
    client_id: int,
    name: str,
    tap: Annotated[
        str,
        typer.Option(metavar="PACKAGE[==VERSION]", help="PyPI package of the tap, and version."),
    ],
    config: Annotated[
        typer.FileBinaryRead,
        typer.Option(metavar="FILE", help="The tap's JSON config file (stored encrypted)."),
    ],
    schedule_: Annotated[
        str,
        typer.Option(
            "--schedule",
            metavar="CRON",
            help="Cron expression, UTC (5 fields, or 6 with seconds last).",
        ),
    ] = "0 * * * *",
    select: Annotated[
        list[str] | None,
        typer.Option(metavar="STREAM", help="Stream to extract; repeatable (default: all)."),
    ] = None,
    replication_key: Annotated[
        list[str] | None,
        typer.Option(
            metavar="STREAM=COLUMN",
            help="Extract STREAM incrementally on COLUMN; repeatable.",
        ),
    ] = None,
    secret: Annotated[
        list[str] | None,
        typer.Option(
            metavar="KEY", help="Config key whose value is secret (besides passwords, tokens, ...)."
        ),
    ] = None,
) -> None:
    """Install the Singer tap (its own virtualenv, cached per package and version), discover
    its streams, and store the catalog with the chosen streams (all by default; incremental on
    a replication key), the config encrypted, and a new API token of the client. The schedule
    is cron in UTC (default `0 * * * *`; a 6th field is seconds)."""
    from services.extractor.settings import ExtractorSettings

    with integrations_db() as conn:
        require_client(conn, client_id)
        try:
            tap_config = orjson.loads(config.read())
        except orjson.JSONDecodeError as exc:
            raise control.ControlError(f"--config is not JSON: {exc}") from None
        emit(
            integrations.add(
                conn,
                ExtractorSettings(),
                client_id=client_id,
                name=name,
                tap=tap,
                config=tap_config,
                cron=schedule_,
                select=split_values(select),
                replication_keys=pairs(split_values(replication_key), "--replication-key"),
                secret=split_values(secret),
            )
        )


@integrations_app.command("ls")
def integrations_ls(client_id: int) -> None:
    """A client's integrations: tap, schedule, streams, saved state, next run, failures in a
    row (config key names only)."""
    with integrations_db() as conn:
        require_client(conn, client_id)
        emit({"client_id": client_id, "integrations": integrations.listed(conn, client_id)})


@integrations_app.command("run")
def integrations_run(
    name: str,
    wait: Annotated[
        bool, typer.Option("--wait", help="Wait for the run to end; print it.")
    ] = False,
    timeout: Annotated[float, typer.Option(min=1, help="With --wait: give up after this.")] = 3600,
) -> None:
    """Ask the extractor to run the integration now (with --wait: print the run when it ends;
    exit 1 unless it succeeded)."""
    with integrations_db() as conn:
        last_id = integrations.last_run_id(conn, name)
        requested = integrations.run_now(conn, name)
        if not wait:
            emit(
                {"name": name, "requested": True, "run_requested_at": requested["run_requested_at"]}
            )
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            runs = [r for r in integrations.runs(conn, name, 5, False) if r["run_id"] > last_id]
            ended = [r for r in runs if r["status"] != "running"]
            if ended:
                emit({"name": name, "run": ended[-1]})
                if ended[-1]["status"] != "succeeded":
                    raise typer.Exit(1)
                return
            time.sleep(0.5)
        fail(f"no run of {name!r} ended within {timeout:g} s (is the extractor running?)")


@integrations_app.command("stop")
def integrations_stop(name: str) -> None:
    """Stop its running run (the next run resumes from the saved state)."""
    with integrations_db() as conn:
        run_id = integrations.stop(conn, name)
    emit({"name": name, "stopping": run_id is not None, "run_id": run_id})


@integrations_app.command("runs")
def integrations_runs(
    name: str,
    limit: Annotated[int, typer.Option(min=1, help="At most this many runs.")] = 20,
    stderr: Annotated[bool, typer.Option("--stderr", help="Include the tap's stderr.")] = False,
) -> None:
    """Run history, newest first: trigger, start, end, status, records per stream, error (and
    with --stderr the tap's stderr, secrets redacted)."""
    with integrations_db() as conn:
        emit({"name": name, "runs": integrations.runs(conn, name, limit, stderr)})


@integrations_app.command("logs")
def integrations_logs(name: str, run_id: int) -> None:
    """One run's tap stderr (secrets redacted)."""
    with integrations_db() as conn:
        emit(integrations.run_log(conn, name, run_id))


@integrations_app.command("pause")
def integrations_pause(name: str) -> None:
    """Stop scheduling it (a run in progress finishes)."""
    with integrations_db() as conn:
        emit(integrations.pause(conn, name))


@integrations_app.command("reset")
def integrations_reset(
    name: str,
    stream: Annotated[
        str | None, typer.Option(help="Only this stream (its tap_stream_id); else all.")
    ] = None,
) -> None:
    """Clear the saved bookmark of a stream (or all): the next runs re-extract it from scratch
    under a new table version, and only a run that succeeds swaps the table in whole
    (`activate_version`); a failed run leaves the old rows in place."""
    with integrations_db() as conn:
        emit(integrations.reset(conn, name, stream))


@integrations_app.command("resume")
def integrations_resume(name: str) -> None:
    """Schedule it again, from its next scheduled time."""
    with integrations_db() as conn:
        emit(integrations.resume(conn, name))


@integrations_app.command("set")
def integrations_set(
    name: str,
    schedule_: Annotated[
        str | None, typer.Option("--schedule", help="A new cron schedule (UTC).")
    ] = None,
    select: Annotated[
        list[str] | None,
        typer.Option(
            "--select", help="The streams to replicate (repeat it); --select-all for every one."
        ),
    ] = None,
    select_all: Annotated[
        bool, typer.Option("--select-all", help="Replicate every stream of its catalog.")
    ] = False,
) -> None:
    """Change its schedule and/or the streams it replicates (from the catalog discovered when
    it was added); a stream keeps its replication key while it stays selected. From the next
    run on."""
    if select and select_all:
        fail("give --select or --select-all, not both")
    streams = [] if select_all else select
    with integrations_db() as conn:
        emit(integrations.configure(conn, name, cron=schedule_, select=streams))


@integrations_app.command("remove")
def integrations_remove(name: str) -> None:
    """Delete it and its run history; revoke its API token."""
    with integrations_db() as conn:
        emit(integrations.remove(conn, name))
