"""Control-plane data access: clients, API tokens, webhook tokens and destinations.

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
_MAX_NAME = 255
_RESERVED_PREFIX = "_sdc"  # Stitch's system columns and tables

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


def webhook_url_path(client_id: int, token: str) -> str:
    """The gate's path that accepts records for a webhook token."""
    return f"/v1/clients/{client_id}/token/{token}"


# --- validation (pure) -----------------------------------------------------------------------


def check_table_name(table_name: str) -> str:
    """``table_name`` if a webhook may load into it; :class:`ControlError` otherwise."""
    _check_name("table name", table_name)
    return table_name


def check_key_field(key_field: str | None) -> str | None:
    """``key_field`` if it names a top-level record field usable as a key; None stays None."""
    if key_field is None:
        return None
    _check_name("key field", key_field)
    if "." in key_field:
        raise ControlError(f"key field {key_field!r} must name a top-level field (no '.')")
    return key_field


def _check_name(what: str, name: str) -> None:
    if not name:
        raise ControlError(f"{what} must not be empty")
    if len(name) > _MAX_NAME:
        raise ControlError(f"{what} is longer than {_MAX_NAME} characters")
    if not name.isprintable():
        raise ControlError(f"{what} {name!r} contains control characters")
    # Warehouses fold case, so "_SDC_x" would collide with the system columns as well.
    if name.lower().startswith(_RESERVED_PREFIX):
        raise ControlError(f"{what} {name!r} starts with {_RESERVED_PREFIX!r}, which is reserved")


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


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


# --- clients ---------------------------------------------------------------------------------


def _client_row(row: tuple[Any, ...]) -> dict[str, Any]:
    return {
        "client_id": row[0],
        "name": row[1],
        "created_at": _iso(row[2]),
        "rate_limit_rps": row[3],
    }


def create_client(conn: Connection, name: str) -> dict[str, Any]:
    """Add a tenant; returns client_id, name, created_at, rate_limit_rps."""
    if not 1 <= len(name) <= 200:
        raise ControlError("client name must be 1 to 200 characters")
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


def get_client(conn: Connection, client_id: int) -> dict[str, Any] | None:
    """One tenant, or None if there is no such client."""
    with conn, conn.cursor() as cur:
        cur.execute(
            "SELECT client_id, name, created_at, rate_limit_rps FROM clients WHERE client_id = %s",
            (client_id,),
        )
        row = cur.fetchone()
    return None if row is None else _client_row(row)


def list_clients(
    conn: Connection, *, after: int = 0, limit: int | None = None
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


# --- limits ----------------------------------------------------------------------------------

# A client's own quotas (NULL: the gate's default), in the order the lookups return them.
LIMITS = ("rate_limit_rps", "bytes_per_s", "max_concurrent_requests", "max_tables")
_LIMIT_COLUMNS = sql.SQL(", ").join(sql.Identifier("c", name) for name in LIMITS)


def get_limits(conn: Connection, client_id: int) -> dict[str, int | None]:
    with conn, conn.cursor() as cur:
        cur.execute(
            sql.SQL("SELECT {} FROM clients c WHERE c.client_id = %s").format(_LIMIT_COLUMNS),
            (client_id,),
        )
        row = cur.fetchone()
    if row is None:
        raise NotFound(f"no client {client_id}")
    return dict(zip(LIMITS, row, strict=True))


def set_limits(
    conn: Connection, client_id: int, changes: dict[str, int | None]
) -> dict[str, int | None]:
    """Set (a positive number) or reset to the gate's default (None) some of a client's
    limits; returns them all."""
    unknown = sorted(set(changes) - set(LIMITS))
    if unknown:
        raise ControlError(f"unknown limit(s) {', '.join(unknown)}; known: {', '.join(LIMITS)}")
    for name, value in changes.items():
        if value is not None and value <= 0:
            raise ControlError(f"{name} must be a positive number (or reset to the default)")
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

GRANT_KINDS = ("bigquery_project", "redshift_role", "s3_endpoint")


def grant_platform(conn: Connection, client_id: int, kind: str, value: str) -> list[dict[str, str]]:
    """Allow a client one use of the platform's credentials; returns its grants."""
    if kind not in GRANT_KINDS:
        raise ControlError(f"unknown grant {kind!r}; known: {', '.join(GRANT_KINDS)}")
    if not value:
        raise ControlError(f"a {kind} grant needs a value")
    with conn, conn.cursor() as cur:
        cur.execute(
            "INSERT INTO platform_grants (client_id, kind, value) VALUES (%s, %s, %s)"
            " ON CONFLICT DO NOTHING",
            (client_id, kind, value),
        )
        audit.record(cur, "client.allow", client_id=client_id, details={kind: value})
    return list_grants(conn, client_id)


def revoke_platform(
    conn: Connection, client_id: int, kind: str, value: str
) -> list[dict[str, str]]:
    with conn, conn.cursor() as cur:
        cur.execute(
            "DELETE FROM platform_grants WHERE client_id = %s AND kind = %s AND value = %s",
            (client_id, kind, value),
        )
        audit.record(cur, "client.disallow", client_id=client_id, details={kind: value})
    return list_grants(conn, client_id)


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
        {"token_id": r[0], "token_prefix": r[1], "created_at": _iso(r[2]), "revoked_at": _iso(r[3])}
        for r in rows
    ]


def revoke_api_token(conn: Connection, token_id: int, client_id: int | None = None) -> bool:
    """Revoke a token (of ``client_id``, when given): True if this call revoked it, False if
    it already was.

    Raises :class:`ControlError` for an unknown id, so a typo is not mistaken for success.
    """
    return _revoke(conn, _REVOKE_API_TOKEN, token_id, client_id, "API token", "token")


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
            ).format(_LIMIT_COLUMNS),
            (hash_token(token),),
        )
        row = cur.fetchone()
    return None if row is None else ApiTokenInfo(row[0], *row[1:])


# --- webhooks --------------------------------------------------------------------------------


def create_webhook(
    conn: Connection, client_id: int, table_name: str = "data", key_field: str | None = None
) -> dict[str, Any]:
    """Issue a webhook token loading into ``table_name``; ``url_path`` and ``token`` shown once."""
    check_table_name(table_name)
    check_key_field(key_field)
    token = new_token("webhook")
    with conn, conn.cursor() as cur:
        cur.execute(
            "INSERT INTO webhooks (client_id, token_hash, token_prefix, table_name, key_field)"
            " SELECT client_id, %s, %s, %s, %s FROM clients WHERE client_id = %s"
            " RETURNING webhook_id",
            (hash_token(token), token_prefix(token), table_name, key_field, client_id),
        )
        row = cur.fetchone()
        if row is not None:
            audit.record(
                cur,
                "webhook.create",
                client_id=client_id,
                subject=f"webhook {row[0]}",
                details={
                    "token_prefix": token_prefix(token),
                    "table_name": table_name,
                    "key_field": key_field,
                },
            )
    if row is None:
        raise NotFound(f"no client {client_id}")
    return {
        "webhook_id": row[0],
        "client_id": client_id,
        "table_name": table_name,
        "key_field": key_field,
        "token": token,
        "token_prefix": token_prefix(token),
        "url_path": webhook_url_path(client_id, token),
    }


def list_webhooks(
    conn: Connection, client_id: int, *, after: int = 0, limit: int | None = None
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
            "created_at": _iso(r[4]),
            "revoked_at": _iso(r[5]),
        }
        for r in rows
    ]


def revoke_webhook(conn: Connection, webhook_id: int, client_id: int | None = None) -> bool:
    """Revoke a webhook (of ``client_id``, when given): True if this call revoked it, False if
    it already was.

    Raises :class:`ControlError` for an unknown id.
    """
    return _revoke(conn, _REVOKE_WEBHOOK, webhook_id, client_id, "webhook", "webhook")


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
            ).format(_LIMIT_COLUMNS),
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
_REVOKE_WEBHOOK = (
    "UPDATE webhooks SET revoked_at = now() WHERE webhook_id = %s"
    " AND (%s::bigint IS NULL OR client_id = %s) AND revoked_at IS NULL RETURNING client_id",
    "SELECT 1 FROM webhooks WHERE webhook_id = %s AND (%s::bigint IS NULL OR client_id = %s)",
)


def _revoke(
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


def split_dsn(dsn: str) -> tuple[dict[str, str], str | None]:
    """A libpq DSN (URL or key=value) as (connection parameters without the password, password).

    The password is split off so it can be stored encrypted, never in the plain config.
    """
    try:
        params = psycopg2.extensions.parse_dsn(dsn)
    except psycopg2.ProgrammingError:
        # libpq's message can quote a fragment of the string, password included: not repeated.
        raise ControlError("invalid DSN: expected a postgresql:// URL or key=value pairs") from None
    password = params.pop("password", None)
    return params, password


def set_destination(
    conn: Connection,
    secret_key: str,
    client_id: int,
    type: str,
    config: dict[str, Any],
    secrets: dict[str, str],
) -> None:
    """Create or replace a client's one destination; ``secrets`` are stored only encrypted."""
    check_destination(type, config, secrets)
    sealed = (
        psycopg2.Binary(
            crypto.encrypt(
                secret_key,
                orjson.dumps(secrets, option=orjson.OPT_SORT_KEYS),
                purpose="destination",
                client_id=client_id,
            )
        )
        if secrets
        else None
    )
    with conn, conn.cursor() as cur:
        cur.execute(
            "INSERT INTO destinations (client_id, type, config, secrets)"
            " SELECT client_id, %s, %s::jsonb, %s FROM clients WHERE client_id = %s"
            " ON CONFLICT (client_id) DO UPDATE SET type = EXCLUDED.type,"
            " config = EXCLUDED.config, secrets = EXCLUDED.secrets, updated_at = now()"
            " RETURNING client_id",
            (type, orjson.dumps(config).decode(), sealed, client_id),
        )
        row = cur.fetchone()
        if row is not None:
            # Waiting batches follow the destination to its new type's loaders (takes effect
            # on their next load; a batch loading now finishes or fails under the old one).
            cur.execute(
                "UPDATE batches SET destination_type = %s, updated_at = now()"
                " WHERE client_id = %s AND state IN ('pending', 'retry_wait')"
                " AND destination_type <> %s",
                (type, client_id, type),
            )
            audit.record(
                cur,
                "destination.set",
                client_id=client_id,
                subject=type,
                # The non-secret settings as stored, and only the names of the secrets.
                details={"type": type, "config": config, "secrets_set": sorted(secrets)},
            )
    if row is None:
        raise NotFound(f"no client {client_id}")


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
        "updated_at": _iso(updated_at),
    }
    if reveal:
        result["secrets"] = secrets
        result["grants"] = list_grants(conn, client_id)
    return result


# --- secret keys -----------------------------------------------------------------------------


def rotate_secrets(conn: Connection, keys: str) -> dict[str, Any]:
    """Re-encrypt every destination secret and integration config under the keyring's newest
    key, in one transaction; values already under it are left alone, so a second run changes
    nothing. Audited (the key id, never a key)."""
    newest = crypto.keyring(keys)[-1].id
    counts = {"destinations": 0, "integrations": 0}
    with conn, conn.cursor() as cur:
        for table, column, purpose, kind in (
            ("destinations", "secrets", "destination", "destinations"),
            ("integrations", "sealed", "integration", "integrations"),
        ):
            cur.execute(
                sql.SQL(
                    "SELECT client_id, {column}, {id} FROM {table}"
                    " WHERE {column} IS NOT NULL FOR UPDATE"
                ).format(
                    column=sql.Identifier(column),
                    table=sql.Identifier(table),
                    id=sql.Identifier("client_id" if table == "destinations" else "integration_id"),
                )
            )
            for client_id, blob, row_id in cur.fetchall():
                sealed = bytes(blob)
                if crypto.key_id_of(sealed) == newest:
                    continue
                plain = crypto.decrypt(keys, sealed, purpose=purpose, client_id=client_id)
                fresh = crypto.encrypt(keys, plain, purpose=purpose, client_id=client_id)
                cur.execute(
                    sql.SQL("UPDATE {table} SET {column} = %s WHERE {id} = %s").format(
                        table=sql.Identifier(table),
                        column=sql.Identifier(column),
                        id=sql.Identifier(
                            "client_id" if table == "destinations" else "integration_id"
                        ),
                    ),
                    (psycopg2.Binary(fresh), row_id),
                )
                counts[kind] += 1
        done = {"key_id": newest, **counts}
        audit.record(cur, "secrets.rotate", subject=newest, details=done)
    return done
