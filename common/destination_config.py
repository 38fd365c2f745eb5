"""A client's destination configuration as every service reads it: the rules it must satisfy
(known type, the libpq allow-list, secrets never in plain text), the platform grants that let it
use the platform's credentials, and the stored configuration with its secrets.

Destination secrets are stored only encrypted with ``SKEIN_SECRET_KEY`` (see ``common.crypto``).
Storing a destination is the control plane's (``services/control/destinations.py``); the loaders
read it with :func:`get_destination` and check :func:`platform_refusal` on every load.
"""

from __future__ import annotations

from typing import Any

import orjson

from common import crypto
from common.control import Connection, ControlError, iso

DESTINATION_TYPES = ("postgres", "redshift", "bigquery", "snowflake", "iceberg")
# Names that always hold a secret: refused in a destination's plain-text config.
SECRET_SETTING_NAMES = frozenset(
    {
        "password",
        "private_key",
        "private_key_passphrase",
        "credentials_json",
        "aws_secret_access_key",
        "catalog_token",
        "catalog_credential",
    }
)


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
