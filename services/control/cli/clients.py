"""``skein clients``: tenants, their limits and platform grants."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

import typer

from common import control
from services.control import accounts
from services.control.cli.shared import control_db, emit, require_client

clients_app = typer.Typer(no_args_is_help=True, help="Clients (tenants).")


@clients_app.command("create")
def clients_create(name: str) -> None:
    """Add a client (a tenant); prints its id."""
    with control_db() as conn:
        emit(accounts.create_client(conn, name))


@clients_app.command("list")
def clients_list() -> None:
    """Every client."""
    with control_db() as conn:
        emit({"clients": accounts.list_clients(conn)})


BigQueryProjects = Annotated[
    list[str] | None, typer.Option(metavar="P", help="A BigQuery project; repeatable.")
]
RedshiftRoles = Annotated[
    list[str] | None, typer.Option(metavar="ARN", help="A Redshift IAM role; repeatable.")
]
S3Endpoints = Annotated[
    list[str] | None, typer.Option(metavar="URL", help="An S3 endpoint; repeatable.")
]


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


def _change_grants(
    client_id: int,
    change: Callable[[control.Connection, int, str, str], list[dict[str, str]]],
    bigquery_project: list[str] | None,
    redshift_role: list[str] | None,
    s3_endpoint: list[str] | None,
) -> None:
    """``change`` each grant the options name; prints the client's grants after the last."""
    with control_db() as conn:
        require_client(conn, client_id)
        for kind, value in _grants(bigquery_project, redshift_role, s3_endpoint):
            grants = change(conn, client_id, kind, value)
        emit({"client_id": client_id, "grants": grants})


@clients_app.command("allow")
def clients_allow(
    client_id: int,
    bigquery_project: BigQueryProjects = None,
    redshift_role: RedshiftRoles = None,
    s3_endpoint: S3Endpoints = None,
) -> None:
    """Let a client use the platform's own credentials for these BigQuery projects (no
    `credentials_json`) or Redshift IAM roles, or stage to these S3 endpoints; anything not
    allowed is refused by `destinations set` and by the loader. Prints the client's grants."""
    _change_grants(client_id, accounts.grant_platform, bigquery_project, redshift_role, s3_endpoint)


@clients_app.command("disallow")
def clients_disallow(
    client_id: int,
    bigquery_project: BigQueryProjects = None,
    redshift_role: RedshiftRoles = None,
    s3_endpoint: S3Endpoints = None,
) -> None:
    """Withdraw grants; the client's next load that needs one is refused."""
    _change_grants(
        client_id, accounts.revoke_platform, bigquery_project, redshift_role, s3_endpoint
    )


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
    four, null meaning the default. Over one, the gate answers 429 with a JSON body naming the
    limit (`requests_per_s`, `bytes_per_s`, `concurrent_requests`, `tables`) and accepts
    nothing; a change takes effect within the gate's token cache TTL."""
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
        emit({"client_id": client_id, "limits": accounts.set_limits(conn, client_id, changes)})
