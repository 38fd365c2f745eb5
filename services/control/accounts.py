"""Clients (tenants), their limits and their platform grants: the control plane's domain for
``skein clients`` and the API's ``/v1/clients``. Each function is one transaction on a
connection the caller owns, and writes its audit row in it."""

from __future__ import annotations

from typing import Any

from psycopg2 import sql

from common import audit, client_limits, control, destination_config


def _client_row(row: tuple[Any, ...]) -> dict[str, Any]:
    return {
        "client_id": row[0],
        "name": row[1],
        "created_at": control.iso(row[2]),
        "rate_limit_rps": row[3],
    }


def create_client(conn: control.Connection, name: str) -> dict[str, Any]:
    """Add a tenant; returns client_id, name, created_at, rate_limit_rps."""
    if not 1 <= len(name) <= 200:
        raise control.ControlError("client name must be 1 to 200 characters")
    with conn, conn.cursor() as cur:
        cur.execute(
            "INSERT INTO clients (name) VALUES (%s)"
            " RETURNING client_id, name, created_at, rate_limit_rps",
            (name,),
        )
        row = cur.fetchone()
        assert row is not None
        audit.record(cur, "client.create", client_id=row[0], subject=name)
    return _client_row(row)


def get_client(conn: control.Connection, client_id: int) -> dict[str, Any] | None:
    """One tenant, or None if there is no such client."""
    with conn, conn.cursor() as cur:
        cur.execute(
            "SELECT client_id, name, created_at, rate_limit_rps FROM clients WHERE client_id = %s",
            (client_id,),
        )
        row = cur.fetchone()
    return None if row is None else _client_row(row)


def list_clients(
    conn: control.Connection, *, after: int = 0, limit: int | None = None
) -> list[dict[str, Any]]:
    """Tenants, oldest first: every one, or a page (ids past ``after``, at most ``limit``)."""
    with conn, conn.cursor() as cur:
        cur.execute(
            "SELECT client_id, name, created_at, rate_limit_rps FROM clients"
            " WHERE client_id > %s ORDER BY client_id LIMIT %s",
            (after, limit),
        )
        rows = cur.fetchall()
    return [_client_row(row) for row in rows]


def get_limits(conn: control.Connection, client_id: int) -> dict[str, int | None]:
    with conn, conn.cursor() as cur:
        cur.execute(
            sql.SQL("SELECT {} FROM clients c WHERE c.client_id = %s").format(
                client_limits.LIMIT_COLUMNS
            ),
            (client_id,),
        )
        row = cur.fetchone()
    if row is None:
        raise control.NotFound(f"no client {client_id}")
    return dict(zip(client_limits.LIMITS, row, strict=True))


def set_limits(
    conn: control.Connection, client_id: int, changes: dict[str, int | None]
) -> dict[str, int | None]:
    """Set (a positive number) or reset to the gate's default (None) some of a client's
    limits; returns them all."""
    unknown = sorted(set(changes) - set(client_limits.LIMITS))
    if unknown:
        raise control.ControlError(
            f"unknown limit(s) {', '.join(unknown)}; known: {', '.join(client_limits.LIMITS)}"
        )
    for name, value in changes.items():
        if value is not None and value <= 0:
            raise control.ControlError(
                f"{name} must be a positive number (or reset to the default)"
            )
    if changes:
        with conn, conn.cursor() as cur:
            cur.execute(
                sql.SQL("UPDATE clients SET {} WHERE client_id = %s").format(
                    sql.SQL(", ").join(
                        sql.SQL("{} = %s").format(sql.Identifier(name)) for name in changes
                    )
                ),
                (*changes.values(), client_id),
            )
            audit.record(cur, "client.set_limits", client_id=client_id, details=changes)
    return get_limits(conn, client_id)


GRANT_KINDS = ("bigquery_project", "redshift_role", "s3_endpoint")


def grant_platform(
    conn: control.Connection, client_id: int, kind: str, value: str
) -> list[dict[str, str]]:
    """Allow a client one use of the platform's credentials; returns its grants."""
    if kind not in GRANT_KINDS:
        raise control.ControlError(f"unknown grant {kind!r}; known: {', '.join(GRANT_KINDS)}")
    if not value:
        raise control.ControlError(f"a {kind} grant needs a value")
    with conn, conn.cursor() as cur:
        cur.execute(
            "INSERT INTO platform_grants (client_id, kind, value) VALUES (%s, %s, %s)"
            " ON CONFLICT DO NOTHING",
            (client_id, kind, value),
        )
        audit.record(cur, "client.allow", client_id=client_id, details={kind: value})
    return destination_config.list_grants(conn, client_id)


def revoke_platform(
    conn: control.Connection, client_id: int, kind: str, value: str
) -> list[dict[str, str]]:
    with conn, conn.cursor() as cur:
        cur.execute(
            "DELETE FROM platform_grants WHERE client_id = %s AND kind = %s AND value = %s",
            (client_id, kind, value),
        )
        audit.record(cur, "client.disallow", client_id=client_id, details={kind: value})
    return destination_config.list_grants(conn, client_id)
