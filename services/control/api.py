"""The control service's HTTP API (127.0.0.1:8082): thin routes over the control-plane domain
(``common.control``, ``services.control.keys``, ``services.control.destinations``), the same
functions ``skein`` calls, so no rule exists twice.

Every request carries an API key (``Authorization: Bearer sko_…|skc_…``, ``skein keys create``).
An operator key acts on every client; a client key on its own client only, and any other
client's resources answer 404 (not 403: ids are not probed). Changes are attributed to the key
in the audit log (``key:<key_id>``). Errors are ``{"error": {"code", "message"}}`` with stable
codes; lists are pages ``{"data": [...], "next_after": id | null}``; the OpenAPI document is at
``/openapi.json``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal, TypeVar

import psycopg2
from fastapi import Depends, FastAPI, Header, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import Counter, Histogram
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from common import audit, control, logs
from common.db import ControlDb
from services.control import destinations, keys
from services.control.settings import ControlSettings
from services.spool import status as table_status

log = logging.getLogger("skein.control")
T = TypeVar("T")
INT8 = 2**63 - 1

REQUESTS = Counter(
    "skein_control_requests_total", "API requests by route template and status", ["route", "status"]
)
REQUEST_SECONDS = Histogram(
    "skein_control_request_duration_seconds",
    "API request latency by route template",
    ["route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)


class ApiError(Exception):
    """An answer other than success: HTTP status, stable code, message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def _error(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status, headers=headers)


# --- request bodies: unknown fields and wrong types are refused (422 invalid_request) -------


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ClientIn(Body):
    name: str = Field(min_length=1, max_length=200)


class LimitsIn(Body):
    """Each limit: a positive number, or null for the gate's default; absent ones unchanged."""

    rate_limit_rps: int | None = Field(None, ge=1, le=2**31 - 1)
    bytes_per_s: int | None = Field(None, ge=1, le=INT8)
    max_concurrent_requests: int | None = Field(None, ge=1, le=2**31 - 1)
    max_tables: int | None = Field(None, ge=1, le=2**31 - 1)


class WebhookIn(Body):
    table_name: str = Field("data", min_length=1, max_length=255)
    key_field: str | None = Field(None, min_length=1, max_length=255)


class DestinationIn(Body):
    """As ``skein destinations set``: ``dsn`` for postgres/redshift (a password in it is moved
    to the secrets), ``settings`` as ``--set``, ``secrets`` as ``--secret-env`` (stored
    encrypted, never shown again)."""

    type: Literal["postgres", "redshift", "bigquery", "snowflake"]
    dsn: str | None = Field(None, max_length=4096)
    schema_: str | None = Field(None, alias="schema", max_length=255)
    settings: dict[str, str] = Field(default_factory=dict, max_length=64)
    secrets: dict[str, str] = Field(default_factory=dict, max_length=16)


class KeyIn(Body):
    client_id: int | None = Field(None, ge=1, le=INT8)  # None: an operator key
    name: str = Field("", max_length=keys.MAX_NAME)


# --- the request size bound -------------------------------------------------------------------


class BodyLimit:
    """413 for a body past ``max_bytes``, declared (Content-Length) or streamed."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        too_big = _error(
            413, "payload_too_large", f"the request body exceeds {self.max_bytes} bytes"
        )
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await too_big(scope, receive, send)
            return
        seen = 0

        async def bounded() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise ApiError(413, "payload_too_large", f"body exceeds {self.max_bytes} bytes")
            return message

        await self.app(scope, bounded, send)


class Observe:
    """Request metrics by route template, and one log line per request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.monotonic()
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            elapsed = time.monotonic() - started
            REQUESTS.labels(route, str(status)).inc()
            REQUEST_SECONDS.labels(route).observe(elapsed)
            log.info(
                "request",
                extra={
                    "method": scope["method"],
                    "route": route,
                    "status": status,
                    "ms": round(elapsed * 1000, 1),
                    "actor": scope.get("state", {}).get("actor"),
                },
            )


# --- who is asking, and pages ---------------------------------------------------------------


async def caller(
    request: Request,
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> keys.Key:
    """The request's live API key (401 otherwise); its changes are attributed to it."""
    scheme, _, key = (authorization or "").partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not keys.has_shape(key):
        raise ApiError(401, "unauthorized", "an API key is needed: Authorization: Bearer sko_…")
    ctl: Control = request.app.state.control
    found = await ctl.run(lambda conn: keys.lookup(conn, key))
    if found is None:
        raise ApiError(401, "unauthorized", "unknown or revoked API key")
    audit.set_actor(found.actor)  # this request's context: the threads it runs in copy it
    request.state.actor = found.actor
    return found


Caller = Annotated[keys.Key, Depends(caller)]
ClientId = Annotated[int, Path(ge=1, le=INT8)]
After = Annotated[
    int, Query(ge=0, le=INT8, description="Ids after this one (a page's next_after).")
]
Limit = Annotated[int | None, Query(ge=1, description="Page size (at most the service's maximum).")]


def page(items: list[dict[str, Any]], id_field: str, limit: int) -> dict[str, Any]:
    """A page from ``limit + 1`` rows: the extra one only says there is a next page."""
    more = len(items) > limit
    data = items[:limit]
    return {"data": data, "next_after": data[-1][id_field] if more and data else None}


# --- the app ----------------------------------------------------------------------------------


class Control:
    """What the routes share: settings and the control-database pool."""

    def __init__(self, settings: ControlSettings, db: ControlDb) -> None:
        self.settings = settings
        self.db = db

    async def run(self, fn: Callable[[control.Connection], T]) -> T:
        """``fn(conn)`` on a pooled connection, off the event loop; the key's actor goes along
        (``run_in_threadpool`` copies the request's context)."""
        return await run_in_threadpool(self.db.run, fn)


def create_app(settings: ControlSettings | None = None) -> FastAPI:
    settings = settings or ControlSettings()
    logs.configure()
    db = ControlDb(settings.control_dsn.get_secret_value(), settings.db_pool_size, "skein-control")
    ctl = Control(settings, db)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        db.close()

    app = FastAPI(
        title="Skein control API",
        version="1",
        lifespan=lifespan,
        description=__doc__,
    )
    app.state.control = ctl
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(Observe)

    @app.exception_handler(ApiError)
    async def api_error(_r: Request, exc: ApiError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else {}
        return _error(exc.status, exc.code, exc.message, headers)

    @app.exception_handler(control.NotFound)
    async def not_found(_r: Request, exc: control.NotFound) -> JSONResponse:
        return _error(404, "not_found", str(exc))

    @app.exception_handler(control.ControlError)
    async def refused(_r: Request, exc: control.ControlError) -> JSONResponse:
        return _error(400, "invalid_request", str(exc))

    @app.exception_handler(RequestValidationError)
    async def invalid(_r: Request, exc: RequestValidationError) -> JSONResponse:
        where = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', 'invalid')}"
            for e in exc.errors()
        )
        return _error(422, "invalid_request", f"invalid request: {where}")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_r: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return _error(exc.status_code, code, str(exc.detail))

    @app.exception_handler(psycopg2.OperationalError)
    async def db_down(_r: Request, _exc: Exception) -> JSONResponse:
        return _error(
            503, "unavailable", "the control database is unavailable", {"Retry-After": "5"}
        )

    @app.exception_handler(TimeoutError)
    async def db_busy(_r: Request, _exc: Exception) -> JSONResponse:
        return _error(503, "unavailable", "the control database is busy", {"Retry-After": "1"})

    @app.exception_handler(Exception)
    async def unexpected(_r: Request, _exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return _error(500, "internal", "internal error")

    def operator(key: keys.Key) -> None:
        if not key.operator:
            raise ApiError(403, "forbidden", "this needs an operator key")

    async def own(key: keys.Key, client_id: int) -> None:
        """404 for another client's resources and for an unknown client."""
        if not key.may_act_for(client_id):
            raise control.NotFound(f"no client {client_id}")
        if await ctl.run(lambda conn: control.get_client(conn, client_id)) is None:
            raise control.NotFound(f"no client {client_id}")

    def size(limit: int | None) -> int:
        return min(limit or settings.page_size, settings.max_page_size)

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        """The process answers (no key; also on the metrics port with /readyz)."""
        return {"status": "ok"}

    # --- clients ------------------------------------------------------------------------------

    @app.get("/v1/clients", tags=["clients"])
    async def clients_list(key: Caller, after: After = 0, limit: Limit = None) -> dict[str, Any]:
        """Clients, oldest first: every one for an operator key, its own for a client key."""
        n = size(limit)
        if key.client_id is not None:
            own_id = key.client_id
            found = await ctl.run(lambda conn: control.get_client(conn, own_id))
            return {"data": [found] if found and own_id > after else [], "next_after": None}
        rows = await ctl.run(lambda conn: control.list_clients(conn, after=after, limit=n + 1))
        return page(rows, "client_id", n)

    @app.post("/v1/clients", status_code=201, tags=["clients"])
    async def clients_create(body: ClientIn, key: Caller) -> dict[str, Any]:
        operator(key)
        return await ctl.run(lambda conn: control.create_client(conn, body.name))

    @app.get("/v1/clients/{client_id}", tags=["clients"])
    async def clients_get(client_id: ClientId, key: Caller) -> dict[str, Any]:
        await own(key, client_id)
        found = await ctl.run(lambda conn: control.get_client(conn, client_id))
        assert found is not None
        return found

    @app.get("/v1/clients/{client_id}/limits", tags=["clients"])
    async def limits_get(client_id: ClientId, key: Caller) -> dict[str, Any]:
        await own(key, client_id)
        return await ctl.run(lambda conn: control.get_limits(conn, client_id))

    @app.patch("/v1/clients/{client_id}/limits", tags=["clients"])
    async def limits_set(client_id: ClientId, body: LimitsIn, key: Caller) -> dict[str, Any]:
        """Only the limits named in the body change (null: back to the gate's default)."""
        operator(key)
        await own(key, client_id)
        changes = body.model_dump(exclude_unset=True)
        return await ctl.run(lambda conn: control.set_limits(conn, client_id, changes))

    # --- Import API tokens --------------------------------------------------------------------

    @app.get("/v1/clients/{client_id}/tokens", tags=["tokens"])
    async def tokens_list(
        client_id: ClientId, key: Caller, after: After = 0, limit: Limit = None
    ) -> dict[str, Any]:
        await own(key, client_id)
        n = size(limit)
        rows = await ctl.run(
            lambda conn: control.list_api_tokens(conn, client_id, after=after, limit=n + 1)
        )
        return page(rows, "token_id", n)

    @app.post("/v1/clients/{client_id}/tokens", status_code=201, tags=["tokens"])
    async def tokens_create(client_id: ClientId, key: Caller) -> dict[str, Any]:
        """A new Import API token; ``token`` is in this answer only."""
        await own(key, client_id)
        return await ctl.run(lambda conn: control.create_api_token(conn, client_id))

    @app.delete("/v1/clients/{client_id}/tokens/{token_id}", tags=["tokens"])
    async def tokens_revoke(client_id: ClientId, token_id: ClientId, key: Caller) -> dict[str, Any]:
        await own(key, client_id)
        revoked = await ctl.run(lambda conn: control.revoke_api_token(conn, token_id, client_id))
        return {"token_id": token_id, "revoked": revoked}

    # --- webhooks -----------------------------------------------------------------------------

    @app.get("/v1/clients/{client_id}/webhooks", tags=["webhooks"])
    async def webhooks_list(
        client_id: ClientId, key: Caller, after: After = 0, limit: Limit = None
    ) -> dict[str, Any]:
        await own(key, client_id)
        n = size(limit)
        rows = await ctl.run(
            lambda conn: control.list_webhooks(conn, client_id, after=after, limit=n + 1)
        )
        return page(rows, "webhook_id", n)

    @app.post("/v1/clients/{client_id}/webhooks", status_code=201, tags=["webhooks"])
    async def webhooks_create(client_id: ClientId, body: WebhookIn, key: Caller) -> dict[str, Any]:
        """A new webhook URL; its token is in this answer only."""
        await own(key, client_id)
        return await ctl.run(
            lambda conn: control.create_webhook(conn, client_id, body.table_name, body.key_field)
        )

    @app.delete("/v1/clients/{client_id}/webhooks/{webhook_id}", tags=["webhooks"])
    async def webhooks_revoke(
        client_id: ClientId, webhook_id: ClientId, key: Caller
    ) -> dict[str, Any]:
        await own(key, client_id)
        revoked = await ctl.run(lambda conn: control.revoke_webhook(conn, webhook_id, client_id))
        return {"webhook_id": webhook_id, "revoked": revoked}

    # --- destination --------------------------------------------------------------------------

    @app.get("/v1/clients/{client_id}/destination", tags=["destination"])
    async def destination_show(client_id: ClientId, key: Caller) -> dict[str, Any]:
        """Settings and the names of the secrets, never their values."""
        await own(key, client_id)
        return await ctl.run(lambda conn: destinations.show(conn, settings, client_id))

    @app.put("/v1/clients/{client_id}/destination", tags=["destination"])
    async def destination_set(
        client_id: ClientId, body: DestinationIn, key: Caller
    ) -> dict[str, Any]:
        """Create or replace the destination (the last write wins); it takes effect on the
        next load, and waiting batches follow a change of type."""
        await own(key, client_id)

        def put(conn: control.Connection) -> dict[str, Any]:
            config, secrets = destinations.settings_of(
                body.type,
                dsn=body.dsn,
                schema=body.schema_,
                settings=body.settings,
                password=None,
                secrets=body.secrets,
            )
            return destinations.put(conn, settings, client_id, body.type, config, secrets)

        return await ctl.run(put)

    @app.post("/v1/clients/{client_id}/destination/test", tags=["destination"])
    async def destination_test(client_id: ClientId, key: Caller) -> dict[str, Any]:
        """Connect as the loader would and report (``ok``, ``server`` or ``error``, ``ms``)."""
        await own(key, client_id)
        return await ctl.run(lambda conn: destinations.test(conn, settings, client_id))

    # --- status -------------------------------------------------------------------------------

    @app.get("/v1/status", tags=["status"])
    async def status(
        key: Caller,
        client_id: Annotated[int | None, Query(ge=1, le=INT8)] = None,
        objective: Annotated[float, Query(ge=1)] = table_status.FRESHNESS_OBJECTIVE_S,
    ) -> dict[str, Any]:
        """As ``skein status``: per table, last load, freshness, waiting and dead batches."""
        if key.client_id is not None:
            if client_id is not None and client_id != key.client_id:
                raise control.NotFound(f"no client {client_id}")
            client_id = key.client_id

        def assess(conn: control.Connection) -> dict[str, Any]:
            return table_status.report(table_status.tables(conn, client_id), objective)

        return await ctl.run(assess)

    # --- API keys (operators) -----------------------------------------------------------------

    @app.get("/v1/keys", tags=["keys"])
    async def keys_list(key: Caller) -> dict[str, Any]:
        operator(key)
        return {"data": await ctl.run(keys.listed), "next_after": None}

    @app.post("/v1/keys", status_code=201, tags=["keys"])
    async def keys_create(body: KeyIn, key: Caller) -> dict[str, Any]:
        """``client_id`` null: an operator key. The key is in this answer only."""
        operator(key)
        return await ctl.run(lambda conn: keys.create(conn, body.client_id, body.name))

    @app.delete("/v1/keys/{key_id}", tags=["keys"])
    async def keys_revoke(key_id: ClientId, key: Caller) -> dict[str, Any]:
        operator(key)
        return {"key_id": key_id, "revoked": await ctl.run(lambda conn: keys.revoke(conn, key_id))}

    return app
