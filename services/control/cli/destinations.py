"""``skein destinations``: each client's warehouse."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer

from common import control
from common.settings import SharedSettings
from services.control import destinations
from services.control.cli.shared import control_db, emit, from_env, pairs, require_client
from services.loaders import registry

destinations_app = typer.Typer(no_args_is_help=True, help="Each client's warehouse.")


# The registry's types, as the CLI's choices.
DestinationType = StrEnum("DestinationType", {name: name for name in registry.TYPES})  # type: ignore[misc]


@destinations_app.command("set")
def destinations_set(
    client_id: int,
    destination_type: Annotated[DestinationType, typer.Argument(metavar="TYPE")],
    dsn: Annotated[
        str | None, typer.Option(help="postgres/redshift: libpq URL or key=value string.")
    ] = None,
    schema: Annotated[str | None, typer.Option(help="Schema (dataset) to load into.")] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", metavar="K=V", help="Non-secret KEY=VALUE setting; repeatable."),
    ] = None,
    password_env: Annotated[
        str | None,
        typer.Option(metavar="VAR", help="Read the password from this environment variable."),
    ] = None,
    password_prompt: Annotated[
        bool, typer.Option("--password-prompt", help="Ask for the password.")
    ] = False,
    secret_env: Annotated[
        list[str] | None,
        typer.Option(
            metavar="K=VAR", help="Secret KEY=VAR read from environment variable VAR; repeatable."
        ),
    ] = None,
) -> None:
    """Create or replace a client's warehouse (postgres, redshift, bigquery, snowflake,
    iceberg), checked when set. A password in the DSN, from --password-env /
    --password-prompt, and the --secret-env values are stored encrypted with SKEIN_SECRET_KEY;
    a DSN may set only `host port dbname user sslmode sslrootcert connect_timeout` (`options`,
    `service`, `passfile`, ... are refused).

    BigQuery: `--set project=P [--schema DATASET] [--set location=L] [--set api_endpoint=URL]
    [--secret-env credentials_json=VAR]`. `--schema` is the dataset (default
    `skein_<client_id>`); `credentials_json` is a credentials file's JSON (a service
    account's), stored encrypted; without it the loader uses Application Default Credentials,
    or none when `api_endpoint` points at an emulator.

    Redshift: `--dsn postgresql://USER@HOST:5439/DB [--schema S] --set s3_bucket=B [--set
    s3_prefix=P --set s3_region=R] (--set iam_role=ARN | --set aws_access_key_id=K
    --secret-env aws_secret_access_key=VAR) --password-env VAR`. Batches are staged in bucket B
    (under P, default `skein-staging`) and loaded with `COPY ... FORMAT AS JSON`, which reads
    them with the IAM role or the key pair (the secret stored encrypted); `--schema` default
    `skein_<client_id>`.

    Snowflake: `--set account=A --set user=U --set database=D [--set warehouse=W --set role=R]
    [--schema S] (--secret-env password=VAR | --secret-env private_key=VAR [--secret-env
    private_key_passphrase=VAR2])`. `--schema` default `SKEIN_<client_id>` (a lowercase name
    is upper-cased, as Snowflake does); `host` / `port` / `protocol` settings point the
    connector at another endpoint (the tests' fakesnow).

    Iceberg: `(--dsn 'host=H dbname=D user=U' --password-env VAR | --set catalog_uri=URL
    [--secret-env catalog_token=VAR]) --set warehouse=s3://BUCKET/PREFIX --set
    aws_access_key_id=K --secret-env aws_secret_access_key=VAR [--schema NAMESPACE] [--set
    s3_endpoint=URL --set s3_region=R]`: a SQL catalog in that Postgres database, or a REST
    catalog; the data files are written with that key pair. The platform's own S3 endpoint
    takes only the buckets in SKEIN_DESTINATION_PLATFORM_S3_BUCKETS, never the batch bucket."""
    with control_db() as conn:
        require_client(conn, client_id)
        if password_env is not None and password_prompt:
            raise control.ControlError("give either --password-env or --password-prompt")
        password = from_env(password_env) if password_env is not None else None
        if (
            dsn is not None
            and destinations.split_dsn(dsn)[1] is not None
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
    one round trip) and report `{"ok", "server", "ms"}` or `{"ok": false, "error"}`; exit 1
    when it cannot be reached."""
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
