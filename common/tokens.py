"""API and webhook tokens: issued, hashed, looked up (with the client's quotas), revoked.

Tokens are stored only as their SHA-256 digest (the plain token is returned once, at creation),
with a short prefix for listings. The gate calls :func:`token_has_shape`, then
:func:`lookup_api_token` or :func:`lookup_webhook`, on every request. (Creating webhooks is the
control plane's: ``services/control/webhooks.py``.) Each function is one transaction.
"""

from __future__ import annotations

import hashlib
import re
import secrets as random_tokens
from dataclasses import dataclass
from typing import Any

from psycopg2 import sql

from common import audit
from common.client_limits import LIMIT_COLUMNS
from common.control import Connection, ControlError, NotFound, iso

_TOKEN_PREFIXES = {"api": "skn_", "webhook": "whk_"}
_TOKEN_BYTES = {"api": 32, "webhook": 24}
_TOKEN_PREFIX_CHARS = 8


@dataclass(frozen=True)
class ApiTokenInfo:
    """What the gate needs to know about a live API token."""

    client_id: int
    rate_limit_rps: int | None
    bytes_per_s: int | None = None
    max_concurrent_requests: int | None = None
    max_tables: int | None = None


@dataclass(frozen=True)
class WebhookInfo:
    """What the gate needs to know about a live webhook token."""

    webhook_id: int
    client_id: int
    table_name: str
    key_field: str | None
    rate_limit_rps: int | None
    bytes_per_s: int | None = None
    max_concurrent_requests: int | None = None
    max_tables: int | None = None


# --- tokens (pure) ---------------------------------------------------------------------------


def new_token(kind: str) -> str:
    """A fresh URL-safe token: ``skn_…`` (256 random bits) for "api", ``whk_…`` (192) for "webhook".

    The prefix tells operators and secret scanners what a leaked string is.
    """
    if kind not in _TOKEN_PREFIXES:
        raise ControlError(f"unknown token kind {kind!r}; expected 'api' or 'webhook'")
    return _TOKEN_PREFIXES[kind] + random_tokens.token_urlsafe(_TOKEN_BYTES[kind])


# What a token looks like: its prefix, then token_urlsafe's alphabet at its exact length.
_TOKEN_SHAPES = {
    kind: re.compile(
        re.escape(prefix)
        + f"[A-Za-z0-9_-]{{{len(random_tokens.token_urlsafe(_TOKEN_BYTES[kind]))}}}"
    )
    for kind, prefix in _TOKEN_PREFIXES.items()
}


def token_has_shape(kind: str, token: str) -> bool:
    """Whether ``token`` could be one we issued (right prefix, alphabet and length): anything
    else is refused before any cache or database is asked."""
    return _TOKEN_SHAPES[kind].fullmatch(token) is not None


def hash_token(token: str) -> bytes:
    """The SHA-256 digest under which a token is stored and looked up.

    A fast unsalted hash is right here, unlike for passwords: tokens are 192-256 random bits, so
    there is nothing to brute-force or precompute, and the gate hashes on every request.
    """
    return hashlib.sha256(token.encode("utf-8")).digest()


def token_prefix(token: str) -> str:
    """The first characters of a token, kept so operators can tell tokens apart in listings."""
    return token[:_TOKEN_PREFIX_CHARS]


# --- API tokens ------------------------------------------------------------------------------


def create_api_token(conn: Connection, client_id: int) -> dict[str, Any]:
    """Issue an Import API token; the plain ``token`` in the result is never retrievable again."""
    token = new_token("api")
    with conn, conn.cursor() as cur:
        # INSERT ... SELECT inserts nothing for an unknown client, which we report by name.
        cur.execute(
            "INSERT INTO api_tokens (client_id, token_hash, token_prefix)"
            " SELECT client_id, %s, %s FROM clients WHERE client_id = %s RETURNING token_id",
            (hash_token(token), token_prefix(token), client_id),
        )
        row = cur.fetchone()
        if row is not None:
            audit.record(
                cur,
                "token.create",
                client_id=client_id,
                subject=f"token {row[0]}",
                details={"token_prefix": token_prefix(token)},
            )
    if row is None:
        raise NotFound(f"no client {client_id}")
    return {
        "token_id": row[0],
        "client_id": client_id,
        "token": token,
        "token_prefix": token_prefix(token),
    }


def list_api_tokens(
    conn: Connection, client_id: int, *, after: int = 0, limit: int | None = None
) -> list[dict[str, Any]]:
    """A client's API tokens, revoked ones included; never the token or its hash. A page:
    ids past ``after``, at most ``limit``."""
    with conn, conn.cursor() as cur:
        cur.execute(
            "SELECT token_id, token_prefix, created_at, revoked_at FROM api_tokens"
            " WHERE client_id = %s AND token_id > %s ORDER BY token_id LIMIT %s",
            (client_id, after, limit),
        )
        rows = cur.fetchall()
    return [
        {"token_id": r[0], "token_prefix": r[1], "created_at": iso(r[2]), "revoked_at": iso(r[3])}
        for r in rows
    ]


def revoke_api_token(conn: Connection, token_id: int, client_id: int | None = None) -> bool:
    """Revoke a token (of ``client_id``, when given): True if this call revoked it, False if
    it already was.

    Raises :class:`ControlError` for an unknown id, so a typo is not mistaken for success.
    """
    return revoke_row(conn, _REVOKE_API_TOKEN, token_id, client_id, "API token", "token")


def lookup_api_token(conn: Connection, token: str) -> ApiTokenInfo | None:
    """The client a live API token belongs to, or None if it is unknown or revoked."""
    row = _live_token_row(
        conn,
        token,
        "api",
        "SELECT t.client_id, {} FROM api_tokens t"
        " JOIN clients c ON c.client_id = t.client_id"
        " WHERE t.token_hash = %s AND t.revoked_at IS NULL",
    )
    return None if row is None else ApiTokenInfo(row[0], *row[1:])


def _live_token_row(conn: Connection, token: str, kind: str, query: str) -> tuple[Any, ...] | None:
    """The row ``query`` finds for ``token`` (its ``{}``: the client's limit columns; its one
    parameter: the token's hash), or None; a token without ``kind``'s prefix is not one of
    ours, so None without asking the database."""
    if not token.startswith(_TOKEN_PREFIXES[kind]):
        return None
    with conn, conn.cursor() as cur:
        cur.execute(sql.SQL(query).format(LIMIT_COLUMNS), (hash_token(token),))
        row: tuple[Any, ...] | None = cur.fetchone()
    return row


# --- webhooks --------------------------------------------------------------------------------


def lookup_webhook(conn: Connection, token: str) -> WebhookInfo | None:
    """Where a live webhook token's records go, or None if it is unknown or revoked."""
    row = _live_token_row(
        conn,
        token,
        "webhook",
        "SELECT w.webhook_id, w.client_id, w.table_name, w.key_field, {}"
        " FROM webhooks w JOIN clients c ON c.client_id = w.client_id"
        " WHERE w.token_hash = %s AND w.revoked_at IS NULL",
    )
    if row is None:
        return None
    return WebhookInfo(
        webhook_id=row[0],
        client_id=row[1],
        table_name=row[2],
        key_field=row[3],
        rate_limit_rps=row[4],
        bytes_per_s=row[5],
        max_concurrent_requests=row[6],
        max_tables=row[7],
    )


# (revoke if live, does it exist at all): two statements because "already revoked" and
# "no such id" need different answers.
# (revoke, exists), each given (id, client_id, client_id): a client_id of NULL matches any.
_REVOKE_API_TOKEN = (
    "UPDATE api_tokens SET revoked_at = now() WHERE token_id = %s"
    " AND (%s::bigint IS NULL OR client_id = %s) AND revoked_at IS NULL RETURNING client_id",
    "SELECT 1 FROM api_tokens WHERE token_id = %s AND (%s::bigint IS NULL OR client_id = %s)",
)


def revoke_row(
    conn: Connection,
    statements: tuple[str, str],
    row_id: int,
    client_id: int | None,
    what: str,
    kind: str,
) -> bool:
    revoke, exists = statements
    with conn, conn.cursor() as cur:
        cur.execute(revoke, (row_id, client_id, client_id))
        revoked = cur.fetchone()
        if revoked is not None:
            audit.record(cur, f"{kind}.revoke", client_id=revoked[0], subject=f"{kind} {row_id}")
            return True
        cur.execute(exists, (row_id, client_id, client_id))
        if cur.fetchone() is None:
            raise NotFound(f"no {what} {row_id}")
    return False
