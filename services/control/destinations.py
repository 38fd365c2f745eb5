"""Each client's destination: the rules ``skein destinations`` and the HTTP API share.

Setting one: the type's typed check (``registry``), the network policy (nothing stored for a
host clients may not reach), the platform grants (the platform's own credentials only where an
operator allowed them), then ``set_destination`` (secrets sealed, waiting batches
follow a type change). Testing one connects as the loader would.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
import psycopg2
import psycopg2.extensions

from common import audit, control, crypto, destination_config, netpolicy
from common.settings import SharedSettings
from services.loaders import registry


def split_dsn(dsn: str) -> tuple[dict[str, str], str | None]:
    """A libpq DSN (URL or key=value) as (connection parameters without the password, password).

    The password is split off so it can be stored encrypted, never in the plain config.
    """
    try:
        params = psycopg2.extensions.parse_dsn(dsn)
    except psycopg2.ProgrammingError:
        # libpq's message can quote a fragment of the string, password included: not repeated.
        raise control.ControlError(
            "invalid DSN: expected a postgresql:// URL or key=value pairs"
        ) from None
    password = params.pop("password", None)
    return params, password


def set_destination(
    conn: control.Connection,
    secret_key: str,
    client_id: int,
    type: str,
    config: dict[str, Any],
    secrets: dict[str, str],
) -> None:
    """Create or replace a client's one destination; ``secrets`` are stored only encrypted."""
    destination_config.check_destination(type, config, secrets)
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
        raise control.NotFound(f"no client {client_id}")


def settings_of(
    destination_type: str,
    *,
    dsn: str | None,
    schema: str | None,
    settings: dict[str, str],
    password: str | None,
    secrets: dict[str, str],
) -> tuple[dict[str, Any], dict[str, str]]:
    """(config, secrets) to store, checked by the type's own module (the registry): a DSN's
    password moves to the secrets."""
    kind = registry.get(destination_type)
    config: dict[str, Any] = {}
    sealed = dict(secrets)
    # An iceberg destination's catalog is a SQL catalog (--dsn) or a REST one (catalog_uri).
    rest_catalog = destination_type == "iceberg" and dsn is None and "catalog_uri" in settings
    if kind.takes_dsn and not rest_catalog:
        if dsn is None:
            also = (
                " or --set catalog_uri=URL (a REST catalog)"
                if destination_type == "iceberg"
                else ""
            )
            raise control.ControlError(f"a {destination_type} destination needs --dsn{also}")
        config["dsn_params"], dsn_password = split_dsn(dsn)
        if dsn_password is not None and password is not None:
            raise control.ControlError(
                "give the password once: in the DSN, --password-env or --password-prompt"
            )
        password = password if password is not None else dsn_password
    elif dsn is not None:
        raise control.ControlError(f"a {destination_type} destination takes no --dsn")
    if schema is not None:
        config["schema"] = schema
    reserved = sorted(set(settings) & {"dsn_params", "schema"})
    if reserved:
        raise control.ControlError(f"--set cannot set {', '.join(reserved)}; use --dsn/--schema")
    config.update(settings)
    if password is not None:
        if "password" in sealed:
            raise control.ControlError("give the password once, not also with --secret-env")
        sealed["password"] = password
    kind.check(config, sealed)  # checked now rather than at the first load
    return config, sealed


def put(
    conn: control.Connection,
    shared: SharedSettings,
    client_id: int,
    destination_type: str,
    config: dict[str, Any],
    secrets: dict[str, str],
) -> dict[str, Any]:
    """Store (create or replace) a checked destination; the stored one as ``show`` gives it."""
    try:  # nothing is stored for a destination pointing where clients may not reach
        netpolicy.check_destination(netpolicy.from_settings(shared), destination_type, config)
    except netpolicy.DestinationRefused as exc:
        raise control.ControlError(str(exc)) from None
    refusal = destination_config.platform_refusal(
        destination_type, config, secrets, destination_config.list_grants(conn, client_id)
    )
    if refusal:
        raise control.ControlError(refusal)
    secret_key = shared.secret_key.get_secret_value()
    set_destination(conn, secret_key, client_id, destination_type, config, secrets)
    return show(conn, shared, client_id)


def show(conn: control.Connection, shared: SharedSettings, client_id: int) -> dict[str, Any]:
    """Settings and the names of the secrets, never their values."""
    found = destination_config.get_destination(
        conn, shared.secret_key.get_secret_value(), client_id
    )
    if found is None:
        raise control.NotFound(f"client {client_id} has no destination")
    return found


def test(conn: control.Connection, shared: SharedSettings, client_id: int) -> dict[str, Any]:
    """Connect as the loader would (network policy, credentials, a round trip) and report."""
    return probe(shared, client_id, stored(conn, shared, client_id))


def stored(conn: control.Connection, shared: SharedSettings, client_id: int) -> dict[str, Any]:
    """The destination with its secrets, as the loader reads it (for ``probe``)."""
    raw = destination_config.get_destination(
        conn, shared.secret_key.get_secret_value(), client_id, reveal=True
    )
    if raw is None:
        raise control.NotFound(f"client {client_id} has no destination")
    return raw


def probe(shared: SharedSettings, client_id: int, raw: dict[str, Any]) -> dict[str, Any]:
    from services.loaders.core.protocol import Destination

    type_ = raw["type"]
    report: dict[str, Any] = {"client_id": client_id, "type": type_, "ok": False}
    started = time.monotonic()
    try:
        vetted = netpolicy.check_destination(netpolicy.from_settings(shared), type_, raw["config"])
        target = registry.get(type_).loader.probe_warehouse()
        destination = Destination(
            client_id,
            type_,
            raw["config"],
            raw.get("secrets", {}),
            raw.get("updated_at") or "",
        ).pinned_to(vetted)
        session = target.open(destination)
        try:
            report["server"] = target.probe(session, destination)
        finally:
            target.close(session)
    except netpolicy.DestinationRefused as exc:
        report["error"] = f"refused by the network policy: {exc}"
    except Exception as exc:  # what the loader would meet: reported, never a traceback
        report["error"] = f"{type(exc).__name__}: {str(exc).strip()}"
    else:
        report["ok"] = True
    report["ms"] = round((time.monotonic() - started) * 1000, 1)
    return report
