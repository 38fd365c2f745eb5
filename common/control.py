"""The control-plane data the services share: API and webhook tokens (issued, hashed, looked
up), the distinct-tables admission, destination rules and reads, platform grants. (What only
the control plane does, creating clients, webhooks and destinations, lives in
``services/control/``.)

Plain functions over a psycopg2 connection the caller owns; each function is one transaction.
Tokens are stored only as their SHA-256 digest (the plain token is returned once, at creation);
destination secrets only encrypted with ``SKEIN_SECRET_KEY`` (see ``common.crypto``).
The gate calls :func:`lookup_api_token` and :func:`lookup_webhook` on every request.
"""

from __future__ import annotations

import hashlib
import re
import secrets as random_tokens
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
import psycopg2
import psycopg2.extensions
from psycopg2 import sql

from common import audit, crypto

DESTINATION_TYPES = ("postgres", "redshift", "bigquery", "snowflake")
# Names that always hold a secret: refused in a destination's plain-text config.
SECRET_SETTING_NAMES = frozenset(
    {"password", "private_key", "private_key_passphrase", "credentials_json"}
)
_TOKEN_PREFIXES = {"api": "skn_", "webhook": "whk_"}
_TOKEN_BYTES = {"api": 32, "webhook": 24}
_TOKEN_PREFIX_CHARS = 8

Connection = psycopg2.extensions.connection


class ControlError(ValueError):
    """A control-plane request that cannot be carried out: bad name, unknown id, ..."""


class NotFound(ControlError):
    """What was named does not exist (or is not the caller's): the API answers 404."""


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


# --- validation (pure) -----------------------------------------------------------------------


# The libpq connection parameters a destination may set (the password travels as a secret).
# Anything else could reach past the client's own database: ``options`` sets server settings
# (``-c statement_timeout=0`` undoes the loader's limits), ``service``/``passfile`` read files
# on the loader's machine, ``sslkey`` and friends name local paths.
LIBPQ_ALLOWED = frozenset(
    {"host", "port", "dbname", "user", "sslmode", "sslrootcert", "connect_timeout"}
)


def check_destination(type: str, config: dict[str, Any], secrets: dict[str, str]) -> None:
    """Refuse an unknown type, libpq parameters outside ``LIBPQ_ALLOWED`` and any secret
    setting that would be stored in plain text."""
    if type not in DESTINATION_TYPES:
        raise ControlError(
            f"destination type {type!r} is not one of {', '.join(DESTINATION_TYPES)}"
        )
    dsn_params = config.get("dsn_params")
    if isinstance(dsn_params, dict):
        refused = sorted(set(dsn_params) - LIBPQ_ALLOWED - {"password"})
        if refused:
            raise ControlError(
                f"connection parameter(s) {', '.join(refused)} are not allowed; a DSN may set "
                f"only {', '.join(sorted(LIBPQ_ALLOWED))}"
            )
    plain_names = set(config) | (set(dsn_params) if isinstance(dsn_params, dict) else set())
    leaked = sorted(plain_names & SECRET_SETTING_NAMES)
    if leaked:
        raise ControlError(f"{', '.join(leaked)} must be given as a secret, not in the config")
    overlap = sorted(set(config) & set(secrets))
    if overlap:
        raise ControlError(f"{', '.join(overlap)} given both as config and as a secret")


def iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


# --- clients ---------------------------------------------------------------------------------


# --- limits ----------------------------------------------------------------------------------


# A client's own quotas (NULL: the gate's default), in the order the lookups return them.
LIMITS = ("rate_limit_rps", "bytes_per_s", "max_concurrent_requests", "max_tables")


LIMIT_COLUMNS = sql.SQL(", ").join(sql.Identifier("c", name) for name in LIMITS)

# Advisory-lock namespace of the distinct-tables quota (two-key form: namespace, client).
_TABLES_LOCK = 0x5E1_7AB


def admit_tables(conn: Connection, client_id: int, names: list[str], limit: int) -> list[str]:
    """Record a client's new tables if all of them fit under ``limit`` distinct tables; return
    the names refused (all the new ones when they do not all fit, else none). Serialised per
    client, so concurrent gate processes cannot both take the last places."""
    with conn, conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(%s, %s)", (_TABLES_LOCK, client_id % 2**31))
        cur.execute(
            "SELECT table_name FROM client_tables WHERE client_id = %s AND table_name = ANY(%s)",
            (client_id, names),
        )
        known = {row[0] for row in cur.fetchall()}
        new = [n for n in names if n not in known]
        if not new:
            return []
        cur.execute("SELECT count(*) FROM client_tables WHERE client_id = %s", (client_id,))
        held = int(cur.fetchone()[0])  # type: ignore[index]
        if held + len(new) > limit:
            return new
        cur.executemany(
            "INSERT INTO client_tables (client_id, table_name) VALUES (%s, %s)"
            " ON CONFLICT DO NOTHING",
            [(client_id, n) for n in new],
        )
        return []


# --- platform grants -------------------------------------------------------------------------


def list_grants(conn: Connection, client_id: int) -> list[dict[str, str]]:
    with conn, conn.cursor() as cur:
        cur.execute(
            "SELECT kind, value FROM platform_grants WHERE client_id = %s ORDER BY kind, value",
            (client_id,),
        )
        return [{"kind": k, "value": v} for k, v in cur.fetchall()]


def platform_refusal(
    type_: str, config: dict[str, Any], secrets: dict[str, str], grants: list[dict[str, str]]
) -> str | None:
    """Why this destination may not use the platform's credentials, or None when it may.

    The platform's credentials are used where a destination brings none of its own: BigQuery
    without ``credentials_json`` (and not at an emulator ``api_endpoint``) runs jobs in the
    named project as the platform; Redshift with ``iam_role`` has COPY assume that role, and
    without an access key pair stages batches with the platform's AWS credentials. Each is
    allowed only for what an operator granted that client (``skein clients allow``); a
    client-set ``s3_endpoint`` likewise (staging requests, signed, would go there).
    """
    allowed = {(g["kind"], g["value"]) for g in grants}
    if type_ == "bigquery" and "credentials_json" not in secrets and not config.get("api_endpoint"):
        project = str(config.get("project") or "")
        if ("bigquery_project", project) not in allowed:
            return (
                f"bigquery project {project!r} would be loaded with the platform's credentials; "
                "give credentials_json, or an operator allows it: skein clients allow "
                "CLIENT_ID --bigquery-project PROJECT"
            )
    if type_ == "redshift":
        role = config.get("iam_role")
        own_keys = bool(config.get("aws_access_key_id")) and "aws_secret_access_key" in secrets
        if role and ("redshift_role", str(role)) not in allowed:
            return (
                f"iam_role {role!r} is not allowed for this client; an operator allows it: "
                "skein clients allow CLIENT_ID --redshift-role ARN"
            )
        if not own_keys and not role:
            return "a redshift destination needs its own access key pair or an allowed iam_role"
    endpoint = config.get("s3_endpoint")
    if endpoint and ("s3_endpoint", str(endpoint)) not in allowed:
        return (
            f"s3_endpoint {endpoint!r} is not allowed for this client; an operator allows it: "
            "skein clients allow CLIENT_ID --s3-endpoint URL"
        )
    return None


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
    if not token.startswith(_TOKEN_PREFIXES["api"]):
        return None  # not one of ours: no need to ask the database
    with conn, conn.cursor() as cur:
        cur.execute(
            sql.SQL(
                "SELECT t.client_id, {} FROM api_tokens t"
                " JOIN clients c ON c.client_id = t.client_id"
                " WHERE t.token_hash = %s AND t.revoked_at IS NULL"
            ).format(LIMIT_COLUMNS),
            (hash_token(token),),
        )
        row = cur.fetchone()
    return None if row is None else ApiTokenInfo(row[0], *row[1:])


# --- webhooks --------------------------------------------------------------------------------


def lookup_webhook(conn: Connection, token: str) -> WebhookInfo | None:
    """Where a live webhook token's records go, or None if it is unknown or revoked."""
    if not token.startswith(_TOKEN_PREFIXES["webhook"]):
        return None
    with conn, conn.cursor() as cur:
        cur.execute(
            sql.SQL(
                "SELECT w.webhook_id, w.client_id, w.table_name, w.key_field, {}"
                " FROM webhooks w JOIN clients c ON c.client_id = w.client_id"
                " WHERE w.token_hash = %s AND w.revoked_at IS NULL"
            ).format(LIMIT_COLUMNS),
            (hash_token(token),),
        )
        row = cur.fetchone()
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


# --- destinations ----------------------------------------------------------------------------


def get_destination(
    conn: Connection, secret_key: str, client_id: int, *, reveal: bool = False
) -> dict[str, Any] | None:
    """A client's destination, or None if it has none.

    ``secrets_set`` names the stored secrets (decrypting is the only way to know them, hence
    the key even without ``reveal``); only ``reveal=True``, for the loaders, adds their values.
    Raises :class:`common.crypto.SecretKeyError` if ``secret_key`` is not the one used to store.
    """
    with conn, conn.cursor() as cur:
        cur.execute(
            "SELECT type, config, secrets, updated_at FROM destinations WHERE client_id = %s",
            (client_id,),
        )
        row = cur.fetchone()
    if row is None:
        return None
    type_, config, sealed, updated_at = row
    secrets: dict[str, str] = (
        {}
        if sealed is None
        else orjson.loads(
            crypto.decrypt(secret_key, bytes(sealed), purpose="destination", client_id=client_id)
        )
    )
    result: dict[str, Any] = {
        "client_id": client_id,
        "type": type_,
        "config": config,
        "secrets_set": sorted(secrets),
        "updated_at": iso(updated_at),
    }
    if reveal:
        result["secrets"] = secrets
        result["grants"] = list_grants(conn, client_id)
    return result


# --- secret keys -----------------------------------------------------------------------------
