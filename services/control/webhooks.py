"""Webhook URLs: issue, list, revoke (``skein webhooks``, ``/v1/clients/{id}/webhooks``). The gate
looks them up with ``common.tokens.lookup_webhook``."""

from __future__ import annotations

from typing import Any

from common import audit, control, tokens

_MAX_NAME = 255


_RESERVED_PREFIX = "_sdc"  # Stitch's system columns and tables


def webhook_url_path(client_id: int, token: str) -> str:
    """The gate's path that accepts records for a webhook token."""
    return f"/v1/clients/{client_id}/token/{token}"


def check_table_name(table_name: str) -> str:
    """``table_name`` if a webhook may load into it; ``ControlError`` otherwise."""
    _check_name("table name", table_name)
    return table_name


def check_key_field(key_field: str | None) -> str | None:
    """``key_field`` if it names a top-level record field usable as a key; None stays None."""
    if key_field is None:
        return None
    _check_name("key field", key_field)
    if "." in key_field:
        raise control.ControlError(f"key field {key_field!r} must name a top-level field (no '.')")
    return key_field


def _check_name(what: str, name: str) -> None:
    if not name:
        raise control.ControlError(f"{what} must not be empty")
    if len(name) > _MAX_NAME:
        raise control.ControlError(f"{what} is longer than {_MAX_NAME} characters")
    if not name.isprintable():
        raise control.ControlError(f"{what} {name!r} contains control characters")
    # Warehouses fold case, so "_SDC_x" would collide with the system columns as well.
    if name.lower().startswith(_RESERVED_PREFIX):
        raise control.ControlError(
            f"{what} {name!r} starts with {_RESERVED_PREFIX!r}, which is reserved"
        )


def create_webhook(
    conn: control.Connection, client_id: int, table_name: str = "data", key_field: str | None = None
) -> dict[str, Any]:
    """Issue a webhook token loading into ``table_name``; ``url_path`` and ``token`` shown once."""
    check_table_name(table_name)
    check_key_field(key_field)
    token = tokens.new_token("webhook")
    with conn, conn.cursor() as cur:
        cur.execute(
            "INSERT INTO webhooks (client_id, token_hash, token_prefix, table_name, key_field)"
            " SELECT client_id, %s, %s, %s, %s FROM clients WHERE client_id = %s"
            " RETURNING webhook_id",
            (
                tokens.hash_token(token),
                tokens.token_prefix(token),
                table_name,
                key_field,
                client_id,
            ),
        )
        row = cur.fetchone()
        if row is not None:
            audit.record(
                cur,
                "webhook.create",
                client_id=client_id,
                subject=f"webhook {row[0]}",
                details={
                    "token_prefix": tokens.token_prefix(token),
                    "table_name": table_name,
                    "key_field": key_field,
                },
            )
    if row is None:
        raise control.NotFound(f"no client {client_id}")
    return {
        "webhook_id": row[0],
        "client_id": client_id,
        "table_name": table_name,
        "key_field": key_field,
        "token": token,
        "token_prefix": tokens.token_prefix(token),
        "url_path": webhook_url_path(client_id, token),
    }


def list_webhooks(
    conn: control.Connection, client_id: int, *, after: int = 0, limit: int | None = None
) -> list[dict[str, Any]]:
    """A client's webhooks, revoked ones included; never the token or its hash. A page: ids
    past ``after``, at most ``limit``."""
    with conn, conn.cursor() as cur:
        cur.execute(
            "SELECT webhook_id, token_prefix, table_name, key_field, created_at, revoked_at"
            " FROM webhooks WHERE client_id = %s AND webhook_id > %s ORDER BY webhook_id"
            " LIMIT %s",
            (client_id, after, limit),
        )
        rows = cur.fetchall()
    return [
        {
            "webhook_id": r[0],
            "token_prefix": r[1],
            "table_name": r[2],
            "key_field": r[3],
            "created_at": control.iso(r[4]),
            "revoked_at": control.iso(r[5]),
        }
        for r in rows
    ]


def revoke_webhook(conn: control.Connection, webhook_id: int, client_id: int | None = None) -> bool:
    """Revoke a webhook (of ``client_id``, when given): True if this call revoked it, False if
    it already was.

    Raises :class:`common.control.ControlError` for an unknown id.
    """
    return tokens.revoke_row(conn, _REVOKE_WEBHOOK, webhook_id, client_id, "webhook", "webhook")


_REVOKE_WEBHOOK = (
    "UPDATE webhooks SET revoked_at = now() WHERE webhook_id = %s"
    " AND (%s::bigint IS NULL OR client_id = %s) AND revoked_at IS NULL RETURNING client_id",
    "SELECT 1 FROM webhooks WHERE webhook_id = %s AND (%s::bigint IS NULL OR client_id = %s)",
)
