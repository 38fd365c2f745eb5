"""The Snowflake warehouse as the lease loop sees it (``services.loaders.core.runner.Warehouse``).

``snowflake-connector-python`` is imported only here and in the tests (the ``snowflake`` extra).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import snowflake.connector
from cryptography.hazmat.primitives import serialization
from snowflake.connector import errors as sf

from common.spool_client import Lease
from common.wire import Header
from services.loaders.core import errors
from services.loaders.core.errors import (
    LoadError,
    PermanentError,
    TransientError,
)
from services.loaders.core.plan import LeaseLoad
from services.loaders.core.reader import Record
from services.loaders.core.runner import Destination
from services.loaders.snowflake import warehouse
from services.loaders.snowflake.destination import Settings

# What of a destination's settings (destination.Settings) goes to connect().
CONNECT_SETTINGS = tuple(name for name in Settings.model_fields if name != "schema_")
# Errors worth retrying although Snowflake reports them as programming errors: bad or expired
# credentials, missing privileges, a warehouse that is suspended or a statement cancelled.
TRANSIENT_ERRNOS = {390100, 390101, 390102, 390144, 390318, 250001, 604, 606, 630, 3001, 3003}


def connect(config: dict[str, Any], secrets: dict[str, str], timeout: int) -> Any:
    params: dict[str, Any] = {k: config[k] for k in CONNECT_SETTINGS if config.get(k)}
    if "port" in params:
        params["port"] = int(params["port"])
    if "password" in secrets:
        params["password"] = secrets["password"]
    if "private_key" in secrets:
        passphrase = secrets.get("private_key_passphrase")
        key = serialization.load_pem_private_key(
            secrets["private_key"].encode(), passphrase.encode() if passphrase else None
        )
        params["private_key"] = key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    return snowflake.connector.connect(
        **params,
        paramstyle="qmark",  # values bound by the server, never interpolated into SQL
        login_timeout=timeout,
        application="skein-loader-snowflake",
        session_parameters={"TIMEZONE": "UTC", "CLIENT_OUT_OF_BAND_TELEMETRY_ENABLED": False},
    )


def classify(exc: BaseException) -> LoadError:
    """Whether a Snowflake failure is worth retrying (``core.errors.classify`` with its hook)."""
    return errors.classify(exc, _driver_error)


def _driver_error(exc: BaseException) -> LoadError | None:
    if isinstance(
        exc,
        sf.OperationalError
        | sf.InterfaceError
        | sf.HttpError
        | sf.InternalServerError
        | sf.ServiceUnavailableError
        | sf.GatewayTimeoutError
        | sf.BadGatewayError
        | sf.RequestTimeoutError
        | sf.TooManyRequests
        | sf.OtherHTTPRetryableError
        | sf.ForbiddenError
        | sf.TokenExpiredError
        | sf.RequestExceedMaxRetryError,
    ):
        return TransientError(f"warehouse unavailable: {exc}")
    if isinstance(exc, sf.Error):
        if exc.errno in TRANSIENT_ERRNOS:
            return TransientError(f"warehouse refused for now: {exc}")
        return PermanentError(f"warehouse rejected the load: {exc}")
    return None


class SnowflakeWarehouse:
    type = "snowflake"

    def __init__(self, connect_timeout: int = 10) -> None:
        self.connect_timeout = connect_timeout
        # (session, schema) pairs whose schema, stage and bookkeeping tables exist: each DDL
        # statement is a round trip to Snowflake, not worth repeating for every lease.
        self._ready: set[tuple[int, str]] = set()

    def open(self, destination: Destination) -> Any:
        return connect(destination.config, destination.secrets, self.connect_timeout)

    def close(self, session: Any) -> None:
        self._ready = {r for r in self._ready if r[0] != id(session)}
        with contextlib.suppress(sf.Error):
            session.close()

    def probe(self, session: Any, destination: Destination) -> str:
        """One round trip (``skein destinations test``): the account's Snowflake version."""
        cur = session.cursor()
        cur.execute("SELECT CURRENT_VERSION()")
        return str(cur.fetchone()[0])

    def cancel(self, session: Any) -> None:
        self.close(session)  # the connector's statements end with their connection

    def already_loaded(self, session: Any, destination: Destination, ids: list[int]) -> set[int]:
        schema = warehouse.schema_of(destination.config, destination.client_id)
        cur = session.cursor()
        if (id(session), schema) not in self._ready:
            warehouse.ensure_metadata(cur, schema)
            self._ready.add((id(session), schema))
        return warehouse.loaded_batches(cur, schema, ids)

    def load(
        self,
        session: Any,
        destination: Destination,
        lease: Lease,
        batch_ids: list[int],
        stream: Iterator[Header | Record],
    ) -> tuple[int, int]:
        schema = warehouse.schema_of(destination.config, destination.client_id)
        work = LeaseLoad.of(lease, batch_ids, stream)
        try:
            return warehouse.load(session, schema, work)
        except Exception:
            self._ready.discard((id(session), schema))  # e.g. the schema was dropped meanwhile
            raise

    def classify(self, exc: BaseException) -> LoadError:
        return classify(exc)


def probe_warehouse() -> SnowflakeWarehouse:
    """The warehouse as ``skein destinations test`` connects to it (default limits)."""
    return SnowflakeWarehouse()
