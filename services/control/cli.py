"""``skein``: the operators' CLI. Every command prints one JSON object on stdout."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, NoReturn

import orjson
import typer
from confluent_kafka import KafkaException

from common import audit, control, crypto, db, kafka_admin
from common import migrate as migrations
from common.settings import SharedSettings
from services.control import destinations, integrations, keys
from services.loaders import registry
from services.spool import status as table_status

app = typer.Typer(
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False, help=__doc__
)
db_app = typer.Typer(no_args_is_help=True, help="Control database.")
kafka_app = typer.Typer(no_args_is_help=True, help="The records topic.")
clients_app = typer.Typer(no_args_is_help=True, help="Clients (tenants).")
tokens_app = typer.Typer(no_args_is_help=True, help="Import API tokens.")
webhooks_app = typer.Typer(no_args_is_help=True, help="Webhook endpoints.")
destinations_app = typer.Typer(no_args_is_help=True, help="Each client's warehouse.")
app.add_typer(db_app, name="db")
app.add_typer(kafka_app, name="kafka")
app.add_typer(clients_app, name="clients")
app.add_typer(tokens_app, name="tokens")
app.add_typer(webhooks_app, name="webhooks")
app.add_typer(destinations_app, name="destinations")
spool_app = typer.Typer(no_args_is_help=True, help="Batches waiting to load (the spool).")
app.add_typer(spool_app, name="spool")
integrations_app = typer.Typer(
    no_args_is_help=True, help="Singer taps the extractor runs on a schedule (integrations)."
)
app.add_typer(integrations_app, name="integrations")
audit_app = typer.Typer(no_args_is_help=True, help="Who changed what in the control plane.")
app.add_typer(audit_app, name="audit")
keys_app = typer.Typer(no_args_is_help=True, help="Keys of the control service's HTTP API.")
app.add_typer(keys_app, name="keys")
secrets_app = typer.Typer(no_args_is_help=True, help="The keyring in SKEIN_SECRET_KEY.")
app.add_typer(secrets_app, name="secrets")


@app.callback()
def _every_command() -> None:
    # Changes this process makes are audited as this OS user's.
    audit.set_actor(audit.os_actor())


def emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(orjson.dumps(obj).decode() + "\n")


def fail(message: str, code: int = 1) -> NoReturn:
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


@contextmanager
def kafka_errors() -> Iterator[None]:
    """A refusal by the brokers (authentication, authorization, ...) as the JSON error."""
    try:
        yield
    except KafkaException as exc:
        fail(f"kafka: {exc}")


@kafka_app.command("ensure-topic")
def kafka_ensure_topic(
    partitions: Annotated[int, typer.Option(envvar="SKEIN_TOPIC_PARTITIONS", min=1)] = 12,
) -> None:
    """Create the records topic (RF 3, min.insync.replicas 2) if it does not exist."""
    settings = SharedSettings()
    with kafka_errors():
        created = kafka_admin.ensure_topic(kafka_admin.admin(settings), settings.topic, partitions)
    emit({"topic": settings.topic, "created": created})


@kafka_app.command("ensure-acls")
def kafka_ensure_acls(
    group: Annotated[
        str, typer.Option(envvar="SKEIN_STREAMERY_GROUP_ID", help="The streamery's group.")
    ] = "skein-streamery",
) -> None:
    """Let the gate write the records topic and the streamery read it in its group (as admin)."""
    settings = SharedSettings()
    with kafka_errors():
        acls = kafka_admin.ensure_acls(kafka_admin.admin(settings), settings.topic, group)
    emit({"topic": settings.topic, "acls": acls})


@kafka_app.command("wait-ready")
def kafka_wait_ready(
    brokers: int = 3, isr: int = 3, timeout: Annotated[float, typer.Option(min=1)] = 90.0
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


# --- control plane ---------------------------------------------------------------------------


@contextmanager
def control_db() -> Iterator[control.Connection]:
    """A control-database connection; a refused request inside it becomes the JSON error."""
    try:
        with closing(db.connect()) as conn:
            yield conn
    except (control.ControlError, crypto.SecretKeyError) as exc:
        fail(str(exc))


def require_client(conn: control.Connection, client_id: int) -> None:
    """Stop with an error for an unknown client, rather than answer with an empty list."""
    if control.get_client(conn, client_id) is None:
        raise control.ControlError(f"no client {client_id}")


@clients_app.command("create")
def clients_create(name: str) -> None:
    """Add a client; prints its id."""
    with control_db() as conn:
        emit(control.create_client(conn, name))


@clients_app.command("list")
def clients_list() -> None:
    """Every client."""
    with control_db() as conn:
        emit({"clients": control.list_clients(conn)})


GrantOption = Annotated[list[str] | None, typer.Option()]


def _grants(
    bigquery_project: list[str] | None,
    redshift_role: list[str] | None,
    s3_endpoint: list[str] | None,
) -> list[tuple[str, str]]:
    found = [
        *(("bigquery_project", v) for v in bigquery_project or []),
        *(("redshift_role", v) for v in redshift_role or []),
        *(("s3_endpoint", v) for v in s3_endpoint or []),
    ]
    if not found:
        raise control.ControlError(
            "name at least one --bigquery-project, --redshift-role or --s3-endpoint"
        )
    return found


@clients_app.command("allow")
def clients_allow(
    client_id: int,
    bigquery_project: GrantOption = None,
    redshift_role: GrantOption = None,
    s3_endpoint: GrantOption = None,
) -> None:
    """Let a client use the platform's credentials for these BigQuery projects / Redshift IAM
    roles, or stage to these S3 endpoints; prints the client's grants."""
    with control_db() as conn:
        require_client(conn, client_id)
        for kind, value in _grants(bigquery_project, redshift_role, s3_endpoint):
            grants = control.grant_platform(conn, client_id, kind, value)
        emit({"client_id": client_id, "grants": grants})


@clients_app.command("disallow")
def clients_disallow(
    client_id: int,
    bigquery_project: GrantOption = None,
    redshift_role: GrantOption = None,
    s3_endpoint: GrantOption = None,
) -> None:
    """Withdraw grants; the client's next load that needs one is refused."""
    with control_db() as conn:
        require_client(conn, client_id)
        for kind, value in _grants(bigquery_project, redshift_role, s3_endpoint):
            grants = control.revoke_platform(conn, client_id, kind, value)
        emit({"client_id": client_id, "grants": grants})


@clients_app.command("set-limits")
def clients_set_limits(
    client_id: int,
    rps: Annotated[int | None, typer.Option(help="Requests per second.")] = None,
    bytes_per_s: Annotated[int | None, typer.Option(help="Request body bytes per second.")] = None,
    concurrent: Annotated[int | None, typer.Option(help="Requests in progress at once.")] = None,
    tables: Annotated[int | None, typer.Option(help="Distinct tables.")] = None,
    reset: Annotated[
        list[str] | None,
        typer.Option(help="Back to the gate's default: rps, bytes_per_s, concurrent, tables."),
    ] = None,
) -> None:
    """Set a client's own quotas (the gate's defaults apply to those never set); prints all
    four, null meaning the default."""
    names = {
        "rps": "rate_limit_rps",
        "bytes_per_s": "bytes_per_s",
        "concurrent": "max_concurrent_requests",
        "tables": "max_tables",
    }
    changes: dict[str, int | None] = {
        names[k]: v
        for k, v in {
            "rps": rps,
            "bytes_per_s": bytes_per_s,
            "concurrent": concurrent,
            "tables": tables,
        }.items()
        if v is not None
    }
    for name in reset or []:
        if name not in names:
            raise control.ControlError(f"--reset takes one of {', '.join(names)}, not {name!r}")
        if names[name] in changes:
            raise control.ControlError(f"{name} is both set and reset")
        changes[names[name]] = None
    with control_db() as conn:
        require_client(conn, client_id)
        emit({"client_id": client_id, "limits": control.set_limits(conn, client_id, changes)})


@tokens_app.command("create")
def tokens_create(client_id: int) -> None:
    """Issue an Import API token. The token is printed now and never again."""
    with control_db() as conn:
        emit(control.create_api_token(conn, client_id))


@tokens_app.command("list")
def tokens_list(client_id: int) -> None:
    """A client's API tokens (prefixes only, never the tokens)."""
    with control_db() as conn:
        require_client(conn, client_id)
        emit({"client_id": client_id, "tokens": control.list_api_tokens(conn, client_id)})


@tokens_app.command("revoke")
def tokens_revoke(token_id: int) -> None:
    """Revoke an API token; "revoked" is false if it already was."""
    with control_db() as conn:
        emit({"token_id": token_id, "revoked": control.revoke_api_token(conn, token_id)})


@webhooks_app.command("create")
def webhooks_create(
    client_id: int,
    table: Annotated[str, typer.Option(help="Table the posted objects load into.")] = "data",
    key: Annotated[
        str | None, typer.Option(help="Top-level field that is the primary key (upserts).")
    ] = None,
) -> None:
    """Issue a webhook URL. Its token is printed now and never again."""
    with control_db() as conn:
        emit(control.create_webhook(conn, client_id, table, key))


@webhooks_app.command("list")
def webhooks_list(client_id: int) -> None:
    """A client's webhooks (prefixes only, never the tokens)."""
    with control_db() as conn:
        require_client(conn, client_id)
        emit({"client_id": client_id, "webhooks": control.list_webhooks(conn, client_id)})


@webhooks_app.command("revoke")
def webhooks_revoke(webhook_id: int) -> None:
    """Revoke a webhook; "revoked" is false if it already was."""
    with control_db() as conn:
        emit({"webhook_id": webhook_id, "revoked": control.revoke_webhook(conn, webhook_id)})


# The registry's types, as the CLI's choices.
DestinationType = StrEnum("DestinationType", {name: name for name in registry.TYPES})  # type: ignore[misc]


def pairs(values: list[str], option: str) -> dict[str, str]:
    """``["K=V", ...]`` as a dict; an entry without ``=`` or with an empty key is an error."""
    found: dict[str, str] = {}
    for value in values:
        key, sep, rest = value.partition("=")
        if not sep or not key:
            raise control.ControlError(f"{option} expects KEY=VALUE, got {value!r}")
        found[key] = rest
    return found


def from_env(variable: str) -> str:
    """A secret from the environment, so it never appears in argv or shell history."""
    value = os.environ.get(variable)
    if not value:
        raise control.ControlError(f"environment variable {variable} is not set or empty")
    return value


@destinations_app.command("set")
def destinations_set(
    client_id: int,
    destination_type: Annotated[DestinationType, typer.Argument(metavar="TYPE")],
    dsn: Annotated[
        str | None, typer.Option(help="postgres/redshift: libpq URL or key=value string.")
    ] = None,
    schema: Annotated[str | None, typer.Option(help="Schema (dataset) to load into.")] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Non-secret KEY=VALUE setting; repeatable.")
    ] = None,
    password_env: Annotated[
        str | None, typer.Option(help="Read the password from this environment variable.")
    ] = None,
    password_prompt: Annotated[
        bool, typer.Option("--password-prompt", help="Ask for the password.")
    ] = False,
    secret_env: Annotated[
        list[str] | None,
        typer.Option(help="Secret KEY=VAR read from environment variable VAR; repeatable."),
    ] = None,
) -> None:
    """Create or replace a client's destination; secrets are stored encrypted."""
    with control_db() as conn:
        require_client(conn, client_id)
        if password_env is not None and password_prompt:
            raise control.ControlError("give either --password-env or --password-prompt")
        password = from_env(password_env) if password_env is not None else None
        if (
            dsn is not None
            and control.split_dsn(dsn)[1] is not None
            and (SharedSettings().env == "production")
        ):
            # argv is visible to every local user (ps, /proc) and kept in shell history.
            raise control.ControlError(
                "a password on the command line is refused in production: give it with "
                "--password-env or --password-prompt"
            )
        if password_prompt:
            # The prompt goes to stderr: stdout carries only the JSON answer.
            password = str(typer.prompt("Password", hide_input=True, err=True))
        config, secrets = destinations.settings_of(
            destination_type.value,
            dsn=dsn,
            schema=schema,
            settings=pairs(set_ or [], "--set"),
            password=password,
            secrets={k: from_env(v) for k, v in pairs(secret_env or [], "--secret-env").items()},
        )
        emit(
            destinations.put(
                conn, SharedSettings(), client_id, destination_type.value, config, secrets
            )
        )


@destinations_app.command("test")
def destinations_test(client_id: int) -> None:
    """Connect to the client's destination as its loader would (network policy, credentials,
    a round trip) and report, as JSON; exit 1 when it cannot be reached."""
    with control_db() as conn:
        require_client(conn, client_id)
        report = destinations.test(conn, SharedSettings(), client_id)
    emit(report)
    if not report["ok"]:
        raise typer.Exit(1)


@destinations_app.command("show")
def destinations_show(client_id: int) -> None:
    """A client's destination: settings and the names of its secrets, never their values."""
    with control_db() as conn:
        require_client(conn, client_id)
        emit(destinations.show(conn, SharedSettings(), client_id))


# --- spool (operators act on the control DB directly: works even when the spool is down) -----


@contextmanager
def spool_db() -> Iterator[control.Connection]:
    from services.spool import queue

    try:
        with closing(db.connect()) as conn:
            yield conn
    except (queue.Conflict, queue.NotFound) as exc:
        fail(str(exc))


@spool_app.command("ls")
def spool_ls(
    state: Annotated[
        str | None, typer.Option(help="pending|leased|retry_wait|loaded|dead|skipped")
    ] = None,
    client: Annotated[int | None, typer.Option("--client")] = None,
    limit: int = 1000,
) -> None:
    """List batches in load order."""
    from services.spool import queue

    if state is not None and state not in queue.STATES:
        fail(f"unknown state {state!r}; one of {', '.join(queue.STATES)}")
    with spool_db() as conn:
        emit({"batches": queue.list_batches(conn, state=state, client_id=client, limit=limit)})


@spool_app.command("stats")
def spool_stats() -> None:
    """Open batches by destination type and state; live leases."""
    from services.spool import queue

    with spool_db() as conn:
        emit(queue.stats(conn))


@spool_app.command("retry")
def spool_retry(
    batch_id: Annotated[int | None, typer.Argument()] = None,
    all_dead: Annotated[bool, typer.Option("--all-dead")] = False,
) -> None:
    """Put a dead batch (or every dead batch) back to pending."""
    from services.spool import queue

    if (batch_id is None) == (not all_dead):
        fail("give a batch id or --all-dead")
    with spool_db() as conn:
        emit({"retried": queue.retry(conn, batch_id)})


@spool_app.command("skip")
def spool_skip(batch_id: int) -> None:
    """Give up on a dead batch so its table's later batches can load."""
    from services.spool import queue

    with spool_db() as conn:
        emit({"skipped": queue.skip(conn, batch_id)})


@spool_app.command("purge")
def spool_purge(
    older_than_days: Annotated[
        float | None,
        typer.Option(help="loaded at least this long ago (default SKEIN_SPOOL_RETENTION_DAYS)"),
    ] = None,
) -> None:
    """Delete the S3 objects of batches loaded longer ago than the retention; rows stay, marked
    purged. Dead and skipped batches are never touched."""
    from services.spool import queue
    from services.spool.objects import BatchObjects
    from services.spool.settings import SpoolSettings

    settings = SpoolSettings()
    days = settings.retention_days if older_than_days is None else older_than_days
    if days <= 0:
        fail("retention is off (0 days): nothing is purged")
    objects = BatchObjects(settings)
    purged = 0
    with spool_db() as conn:
        while done := queue.purge_loaded(conn, days * 86400, objects.delete):
            purged += done
    emit({"purged": purged, "older_than_days": days})


# --- integrations (Singer taps run by the extractor, services/extractor/) --------------------


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
    tap: Annotated[str, typer.Option(help="PyPI package of the tap, PACKAGE[==VERSION].")],
    config: Annotated[
        typer.FileBinaryRead, typer.Option(help="The tap's JSON config file (stored encrypted).")
    ],
    schedule_: Annotated[
        str,
        typer.Option("--schedule", help="Cron expression, UTC (5 fields, or 6 with seconds last)."),
    ] = "0 * * * *",
    select: Annotated[
        list[str] | None, typer.Option(help="Stream to extract; repeatable (default: all).")
    ] = None,
    replication_key: Annotated[
        list[str] | None,
        typer.Option(help="STREAM=COLUMN: extract STREAM incrementally on COLUMN; repeatable."),
    ] = None,
    secret: Annotated[
        list[str] | None,
        typer.Option(help="Config key whose value is secret (besides passwords, tokens, ...)."),
    ] = None,
) -> None:
    """Install the tap (its own virtualenv, cached), discover its streams, store the integration."""
    from services.extractor.settings import ExtractorSettings

    with integrations_db() as conn:
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
    """A client's integrations: tap, schedule, streams, state, next run, failures."""
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
    """Ask the extractor to run the integration now."""
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
    limit: Annotated[int, typer.Option(min=1)] = 20,
    stderr: Annotated[bool, typer.Option("--stderr", help="Include the tap's stderr.")] = False,
) -> None:
    """Run history, newest first: start, end, status, records per stream, error."""
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


@integrations_app.command("resume")
def integrations_resume(name: str) -> None:
    """Schedule it again, from its next scheduled time."""
    with integrations_db() as conn:
        emit(integrations.resume(conn, name))


@integrations_app.command("remove")
def integrations_remove(name: str) -> None:
    """Delete it and its run history; revoke its API token."""
    with integrations_db() as conn:
        emit(integrations.remove(conn, name))


@keys_app.command("create")
def keys_create(
    operator: Annotated[
        bool, typer.Option("--operator", help="A key for every client (an operator's).")
    ] = False,
    client: Annotated[int | None, typer.Option("--client", help="A key for this client.")] = None,
    name: Annotated[str, typer.Option(help="What the key is for.")] = "",
) -> None:
    """Create an API key; the key is printed this once only."""
    if operator == (client is not None):
        fail("give either --operator or --client CLIENT_ID")
    with control_db() as conn:
        created = keys.create(conn, client, name)
    emit({"key_id": created["key_id"], "key": created["key"]})


@keys_app.command("list")
def keys_list(
    client: Annotated[int | None, typer.Option("--client", help="Only this client's.")] = None,
) -> None:
    """Keys, revoked ones included; never a key itself."""
    with control_db() as conn:
        emit({"keys": keys.listed(conn, client)})


@keys_app.command("revoke")
def keys_revoke(key_id: int) -> None:
    """Revoke a key: its next request is refused (401)."""
    with control_db() as conn:
        emit({"key_id": key_id, "revoked": keys.revoke(conn, key_id)})


@app.command("status")
def status(
    client: Annotated[int | None, typer.Option("--client", help="Only this client.")] = None,
    objective: Annotated[
        float, typer.Option(min=1, help="Freshness objective in seconds.")
    ] = table_status.FRESHNESS_OBJECTIVE_S,
) -> None:
    """Per client and table: last load, freshness, pending and dead batches. Exit code 1 when
    a table has dead batches or records waiting longer than the freshness objective."""
    with closing(db.connect()) as conn:
        found = table_status.report(table_status.tables(conn, client), objective)
    emit(found)
    if not found["healthy"]:
        raise typer.Exit(1)


def main() -> None:
    app()


@audit_app.command("ls")
def audit_ls(
    client: Annotated[int | None, typer.Option(help="Only this client's changes.")] = None,
    since: Annotated[
        str | None, typer.Option(help="Only changes at or after this ISO 8601 time.")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=100_000)] = 1000,
) -> None:
    """Control-plane changes, newest first: when, who, what, on which client (never secrets)."""
    with control_db() as conn:
        try:
            after = datetime.fromisoformat(since) if since else None
        except ValueError:
            raise control.ControlError(f"--since {since!r} is not an ISO 8601 time") from None
        emit({"entries": audit.entries(conn, client_id=client, since=after, limit=limit)})


@secrets_app.command("rotate")
def secrets_rotate() -> None:
    """Re-encrypt every destination secret and integration config under the newest key of
    SKEIN_SECRET_KEY, in one transaction (safe to run again: values already under it stay)."""
    keys = SharedSettings().secret_key.get_secret_value()
    with control_db() as conn:
        emit(control.rotate_secrets(conn, keys))
