"""Keys of the control service's HTTP API: the domain both ``skein keys`` and the API use.

``sko_…`` (operator: every client) or ``skc_…`` (one client), 256 random bits, stored as
SHA-256 (``tokens.hash_token``: nothing to brute-force in 256 random bits) and shown once.
A key of the wrong shape is refused before the database is asked.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from typing import Any

from common import audit, control, tokens
from services.control.principal import Principal

OPERATOR_PREFIX = "sko_"
CLIENT_PREFIX = "skc_"
_BYTES = 32
_SHAPE = re.compile(
    f"(?:{OPERATOR_PREFIX}|{CLIENT_PREFIX})[A-Za-z0-9_-]{{{len(secrets.token_urlsafe(_BYTES))}}}"
)
MAX_NAME = 200


@dataclass(frozen=True)
class Key(Principal):
    """Who a request's key speaks for."""

    key_id: int

    @property
    def actor(self) -> str:
        """The audit log's actor for changes made with this key."""
        return f"key:{self.key_id}"


def has_shape(key: str) -> bool:
    return _SHAPE.fullmatch(key) is not None


def create(conn: control.Connection, client_id: int | None, name: str = "") -> dict[str, Any]:
    """A new key for one client, or (``client_id`` None) for the operator; the plain ``key``
    is in this answer only."""
    if len(name) > MAX_NAME:
        raise control.ControlError(f"a key name is at most {MAX_NAME} characters")
    key = (OPERATOR_PREFIX if client_id is None else CLIENT_PREFIX) + secrets.token_urlsafe(_BYTES)
    with conn, conn.cursor() as cur:
        if client_id is not None:
            cur.execute("SELECT 1 FROM clients WHERE client_id = %s", (client_id,))
            if cur.fetchone() is None:
                raise control.NotFound(f"no client {client_id}")
        cur.execute(
            "INSERT INTO api_keys (client_id, name, key_hash, key_prefix) VALUES (%s, %s, %s, %s)"
            " RETURNING key_id, created_at",
            (client_id, name, tokens.hash_token(key), tokens.token_prefix(key)),
        )
        key_id, created_at = cur.fetchone()  # type: ignore[misc]
        audit.record(
            cur,
            "key.create",
            client_id=client_id,
            subject=f"key {key_id}",
            details={"key_prefix": tokens.token_prefix(key), "name": name},
        )
    return {
        "key_id": key_id,
        "key": key,
        "client_id": client_id,
        "name": name,
        "created_at": created_at.isoformat(),
    }


def listed(
    conn: control.Connection,
    client_id: int | None = None,
    *,
    after: int = 0,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """Keys (all, or one client's), revoked ones included; never a key or its hash. A page:
    ids past ``after``, at most ``limit``."""
    with conn, conn.cursor() as cur:
        cur.execute(
            "SELECT key_id, client_id, name, key_prefix, created_at, revoked_at FROM api_keys"
            " WHERE (%(client)s::bigint IS NULL OR client_id = %(client)s) AND key_id > %(after)s"
            " ORDER BY key_id LIMIT %(limit)s",
            {"client": client_id, "after": after, "limit": limit},
        )
        rows = cur.fetchall()
    return [
        {
            "key_id": r[0],
            "client_id": r[1],
            "kind": "operator" if r[1] is None else "client",
            "name": r[2],
            "key_prefix": r[3],
            "created_at": r[4].isoformat(),
            "revoked_at": control.iso(r[5]),
        }
        for r in rows
    ]


def revoke(conn: control.Connection, key_id: int) -> bool:
    """True if this call revoked the key, False if it already was; unknown id: ControlError."""
    with conn, conn.cursor() as cur:
        cur.execute(
            "UPDATE api_keys SET revoked_at = now() WHERE key_id = %s AND revoked_at IS NULL"
            " RETURNING client_id",
            (key_id,),
        )
        row = cur.fetchone()
        if row is not None:
            audit.record(cur, "key.revoke", client_id=row[0], subject=f"key {key_id}")
            return True
        cur.execute("SELECT 1 FROM api_keys WHERE key_id = %s", (key_id,))
        if cur.fetchone() is None:
            raise control.NotFound(f"no key {key_id}")
    return False


def lookup(conn: control.Connection, key: str) -> Key | None:
    """The live key ``key`` is, or None (unknown, revoked, or not a key's shape)."""
    if not has_shape(key):
        return None
    with conn, conn.cursor() as cur:
        cur.execute(
            "SELECT key_id, client_id FROM api_keys WHERE key_hash = %s AND revoked_at IS NULL",
            (tokens.hash_token(key),),
        )
        row = cur.fetchone()
    return None if row is None else Key(client_id=row[1], key_id=row[0])
