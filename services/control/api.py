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

import asyncio
import contextvars
import logging
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal, TypeVar

import orjson
import psycopg2
from fastapi import Depends, FastAPI, Header, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from prometheus_client import Counter, Histogram
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from common import audit, control, logs
from common.db import ControlDb
from services.control import accounts, connect, destinations, integrations, keys, webhooks
from services.control.settings import ControlSettings
from services.extractor.settings import ExtractorSettings
from services.spool import queue
from services.spool import status as table_status
from services.spool.objects import BatchObjects
from services.spool.settings import SpoolSettings

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
    status: int,
    code: str,
    message: str,
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> JSONResponse:
    body = {"code": code, "message": message, **(extra or {})}
    return JSONResponse({"error": body}, status, headers=headers)


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


class IntegrationIn(Body):
    """As ``skein integrations add``: the tap is installed and discovered before the answer."""

    name: str = Field(min_length=1, max_length=100)
    tap: str = Field(min_length=1, max_length=300, description="PACKAGE[==VERSION]")
    config: dict[str, Any] = Field(description="The tap's config (stored encrypted).")
    schedule: str = Field("0 * * * *", max_length=200)
    select: list[Annotated[str, Field(max_length=255)]] = Field(
        default_factory=list, max_length=1000
    )
    replication_keys: dict[str, str] = Field(default_factory=dict, max_length=1000)
    secret_keys: list[Annotated[str, Field(max_length=255)]] = Field(
        default_factory=list, max_length=100
    )


class PurgeIn(Body):
    older_than_days: float | None = Field(None, gt=0)


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
Name = Annotated[str, Path(min_length=1, max_length=100)]
PageNo = Annotated[int, Query(ge=1, le=1_000_000)]
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

    @app.exception_handler(queue.NotFound)
    async def no_batch(_r: Request, exc: queue.NotFound) -> JSONResponse:
        return _error(404, "not_found", str(exc))

    @app.exception_handler(queue.Conflict)
    async def conflict(_r: Request, exc: queue.Conflict) -> JSONResponse:
        return _error(409, "conflict", str(exc))

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
        if await ctl.run(lambda conn: accounts.get_client(conn, client_id)) is None:
            raise control.NotFound(f"no client {client_id}")

    log_secret = settings.secret_key.get_secret_value()
    # Installing a tap or purging takes long: their own threads, not the request pool's.
    long_pool = ThreadPoolExecutor(2, thread_name_prefix="control-long")

    async def run_long(fn: Callable[[control.Connection], T]) -> T:
        context = contextvars.copy_context()
        return await asyncio.get_running_loop().run_in_executor(
            long_pool, lambda: context.run(ctl.db.run, fn, 30.0)
        )

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
            found = await ctl.run(lambda conn: accounts.get_client(conn, own_id))
            return {"data": [found] if found and own_id > after else [], "next_after": None}
        rows = await ctl.run(lambda conn: accounts.list_clients(conn, after=after, limit=n + 1))
        return page(rows, "client_id", n)

    @app.post("/v1/clients", status_code=201, tags=["clients"])
    async def clients_create(body: ClientIn, key: Caller) -> dict[str, Any]:
        operator(key)
        return await ctl.run(lambda conn: accounts.create_client(conn, body.name))

    @app.get("/v1/clients/{client_id}", tags=["clients"])
    async def clients_get(client_id: ClientId, key: Caller) -> dict[str, Any]:
        await own(key, client_id)
        found = await ctl.run(lambda conn: accounts.get_client(conn, client_id))
        assert found is not None
        return found

    @app.get("/v1/clients/{client_id}/limits", tags=["clients"])
    async def limits_get(client_id: ClientId, key: Caller) -> dict[str, Any]:
        await own(key, client_id)
        return await ctl.run(lambda conn: accounts.get_limits(conn, client_id))

    @app.patch("/v1/clients/{client_id}/limits", tags=["clients"])
    async def limits_set(client_id: ClientId, body: LimitsIn, key: Caller) -> dict[str, Any]:
        """Only the limits named in the body change (null: back to the gate's default)."""
        operator(key)
        await own(key, client_id)
        changes = body.model_dump(exclude_unset=True)
        return await ctl.run(lambda conn: accounts.set_limits(conn, client_id, changes))

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
            lambda conn: webhooks.list_webhooks(conn, client_id, after=after, limit=n + 1)
        )
        return page(rows, "webhook_id", n)

    @app.post("/v1/clients/{client_id}/webhooks", status_code=201, tags=["webhooks"])
    async def webhooks_create(client_id: ClientId, body: WebhookIn, key: Caller) -> dict[str, Any]:
        """A new webhook URL; its token is in this answer only."""
        await own(key, client_id)
        return await ctl.run(
            lambda conn: webhooks.create_webhook(conn, client_id, body.table_name, body.key_field)
        )

    @app.delete("/v1/clients/{client_id}/webhooks/{webhook_id}", tags=["webhooks"])
    async def webhooks_revoke(
        client_id: ClientId, webhook_id: ClientId, key: Caller
    ) -> dict[str, Any]:
        await own(key, client_id)
        revoked = await ctl.run(lambda conn: webhooks.revoke_webhook(conn, webhook_id, client_id))
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
        after_client: Annotated[int | None, Query(ge=0, le=INT8)] = None,
        after_table: Annotated[str, Query(max_length=255)] = "",
        limit: Limit = None,
    ) -> Response:
        """As ``skein status``, a page of tables at a time (ordered by client, then table):
        last load, freshness, waiting and dead batches; ``healthy`` and ``unhealthy`` cover
        the page. The next page: ``after_client`` and ``after_table`` from ``next_after``."""
        if key.client_id is not None:
            if client_id is not None and client_id != key.client_id:
                raise control.NotFound(f"no client {client_id}")
            client_id = key.client_id
        n = size(limit)
        after = None if after_client is None else (after_client, after_table)

        def assess(conn: control.Connection) -> dict[str, Any]:
            found = table_status.tables(conn, client_id, after=after, limit=n + 1)
            more = len(found) > n
            report = table_status.report(found[:n], objective)
            last = found[n - 1] if more else None
            report["next_after"] = (
                None
                if last is None
                else {"client_id": last.client_id, "table_name": last.table_name}
            )
            return report

        # thousands of tables: orjson, not FastAPI's generic encoder
        return Response(orjson.dumps(await ctl.run(assess)), media_type="application/json")

    # --- integrations -------------------------------------------------------------------------

    @app.get("/v1/clients/{client_id}/integrations", tags=["integrations"])
    async def integrations_list(client_id: ClientId, key: Caller) -> dict[str, Any]:
        await own(key, client_id)
        found = await ctl.run(lambda conn: integrations.listed(conn, client_id))
        return {"data": found, "next_after": None}

    @app.post("/v1/clients/{client_id}/integrations", status_code=201, tags=["integrations"])
    async def integrations_add(
        client_id: ClientId, body: IntegrationIn, key: Caller
    ) -> dict[str, Any]:
        """Install the tap, discover its streams, store the integration (seconds to minutes)."""
        await own(key, client_id)

        def add(conn: control.Connection) -> dict[str, Any]:
            return integrations.add(
                conn,
                ExtractorSettings(),
                client_id=client_id,
                name=body.name,
                tap=body.tap,
                config=body.config,
                cron=body.schedule,
                select=body.select,
                replication_keys=body.replication_keys,
                secret=body.secret_keys,
            )

        return await run_long(add)

    async def integration(key: keys.Key, client_id: int, name: str) -> dict[str, Any]:
        await own(key, client_id)
        return await ctl.run(lambda conn: integrations.owned(conn, name, client_id))

    @app.get("/v1/clients/{client_id}/integrations/{name}", tags=["integrations"])
    async def integrations_get(client_id: ClientId, name: Name, key: Caller) -> dict[str, Any]:
        return await integration(key, client_id, name)

    @app.post("/v1/clients/{client_id}/integrations/{name}/run", tags=["integrations"])
    async def integrations_run(client_id: ClientId, name: Name, key: Caller) -> dict[str, Any]:
        """Ask the extractor to run it at its next tick."""
        await integration(key, client_id, name)
        return await ctl.run(lambda conn: integrations.run_now(conn, name))

    @app.post("/v1/clients/{client_id}/integrations/{name}/stop", tags=["integrations"])
    async def integrations_stop(client_id: ClientId, name: Name, key: Caller) -> dict[str, Any]:
        """Stop the running run (the next run resumes from the saved state)."""
        await integration(key, client_id, name)
        run_id = await ctl.run(lambda conn: integrations.stop(conn, name))
        return {"name": name, "stopping": run_id is not None, "run_id": run_id}

    @app.get("/v1/clients/{client_id}/integrations/{name}/runs", tags=["integrations"])
    async def integrations_runs(
        client_id: ClientId,
        name: Name,
        key: Caller,
        limit: Annotated[int, Query(ge=1, le=1000)] = 20,
        stderr: bool = False,
    ) -> dict[str, Any]:
        await integration(key, client_id, name)
        runs = await ctl.run(lambda conn: integrations.runs(conn, name, limit, stderr))
        return {"data": runs, "next_after": None}

    @app.get("/v1/clients/{client_id}/integrations/{name}/runs/{run_id}/log", tags=["integrations"])
    async def integrations_log(
        client_id: ClientId, name: Name, run_id: ClientId, key: Caller
    ) -> dict[str, Any]:
        """One run's tap stderr (secrets redacted)."""
        await integration(key, client_id, name)
        return await ctl.run(lambda conn: integrations.run_log(conn, name, run_id))

    @app.post("/v1/clients/{client_id}/integrations/{name}/pause", tags=["integrations"])
    async def integrations_pause(client_id: ClientId, name: Name, key: Caller) -> dict[str, Any]:
        await integration(key, client_id, name)
        return await ctl.run(lambda conn: integrations.pause(conn, name))

    @app.post("/v1/clients/{client_id}/integrations/{name}/resume", tags=["integrations"])
    async def integrations_resume(client_id: ClientId, name: Name, key: Caller) -> dict[str, Any]:
        await integration(key, client_id, name)
        return await ctl.run(lambda conn: integrations.resume(conn, name))

    @app.delete("/v1/clients/{client_id}/integrations/{name}", tags=["integrations"])
    async def integrations_remove(client_id: ClientId, name: Name, key: Caller) -> dict[str, Any]:
        await integration(key, client_id, name)
        return await ctl.run(lambda conn: integrations.remove(conn, name))

    # --- spool batches ------------------------------------------------------------------------

    @app.get("/v1/batches", tags=["batches"])
    async def batches_list(
        key: Caller,
        state: Annotated[
            str | None, Query(pattern="^(pending|leased|retry_wait|loaded|dead|skipped)$")
        ] = None,
        client_id: Annotated[int | None, Query(ge=1, le=INT8)] = None,
        after: After = 0,
        limit: Limit = None,
    ) -> dict[str, Any]:
        """Batches by id; a client key sees its own client's only."""
        if key.client_id is not None:
            if client_id not in (None, key.client_id):
                raise control.NotFound(f"no client {client_id}")
            client_id = key.client_id
        n = size(limit)
        rows = await ctl.run(
            lambda conn: queue.page_batches(
                conn, state=state, client_id=client_id, after=after, limit=n + 1
            )
        )
        return page(rows, "batch_id", n)

    @app.get("/v1/batches/stats", tags=["batches"])
    async def batches_stats(key: Caller) -> dict[str, Any]:
        """Open batches by destination type and state; live leases (operators)."""
        operator(key)
        return await ctl.run(queue.stats)

    async def batch_of(key: keys.Key, batch_id: int) -> None:
        found = await ctl.run(lambda conn: queue.get_batch(conn, batch_id))
        if not key.may_act_for(found["client_id"]):
            raise queue.NotFound(f"no batch {batch_id}")

    @app.post("/v1/batches/{batch_id}/retry", tags=["batches"])
    async def batches_retry(batch_id: ClientId, key: Caller) -> dict[str, Any]:
        """Put a dead batch back to pending (to its client's destination as it is now)."""
        await batch_of(key, batch_id)
        return {"retried": await ctl.run(lambda conn: queue.retry(conn, batch_id))}

    @app.post("/v1/batches/{batch_id}/skip", tags=["batches"])
    async def batches_skip(batch_id: ClientId, key: Caller) -> dict[str, Any]:
        """Give up on a dead batch so its table's later batches can load."""
        await batch_of(key, batch_id)
        return {"skipped": await ctl.run(lambda conn: queue.skip(conn, batch_id))}

    @app.post("/v1/batches/retry-dead", tags=["batches"])
    async def batches_retry_dead(key: Caller) -> dict[str, Any]:
        """Every dead batch back to pending (operators)."""
        operator(key)
        return {"retried": await ctl.run(lambda conn: queue.retry(conn, None))}

    @app.post("/v1/batches/purge", tags=["batches"])
    async def batches_purge(body: PurgeIn, key: Caller) -> dict[str, Any]:
        """Delete the S3 objects of batches loaded longer ago than the retention (operators)."""
        operator(key)
        spool_settings = SpoolSettings()
        days = body.older_than_days or spool_settings.retention_days
        if days <= 0:
            raise control.ControlError("retention is off (0 days): nothing is purged")
        objects = BatchObjects(spool_settings)

        def purge(conn: control.Connection) -> int:
            purged = 0
            while done := queue.purge_loaded(conn, days * 86400, objects.delete):
                purged += done
            return purged

        return {"purged": await run_long(purge), "older_than_days": days}

    # --- Stitch Connect v4 (read side, and sync) ----------------------------------------------

    @app.get("/v4/{client_id}/loads", tags=["connect v4"])
    async def v4_loads(client_id: ClientId, key: Caller, page: PageNo = 1) -> dict[str, Any]:
        """Each table's last load and error state (Stitch's ``loads``)."""
        await own(key, client_id)

        def loads(conn: control.Connection) -> tuple[list[dict[str, Any]], int]:
            found = table_status.tables(conn, client_id)
            sources = integrations.stream_sources(conn, client_id)
            per = settings.page_size
            chosen = found[(page - 1) * per : page * per]
            return [connect.load(client_id, t, sources.get(t.table_name)) for t in chosen], len(
                found
            )

        data, total = await ctl.run(loads)
        return connect.page(data, page, settings.page_size, total, f"/v4/{client_id}/loads")

    @app.get("/v4/{client_id}/extractions", tags=["connect v4"])
    async def v4_extractions(client_id: ClientId, key: Caller, page: PageNo = 1) -> dict[str, Any]:
        """The client's integration runs, newest first (Stitch's ``extractions``)."""
        await own(key, client_id)
        per = settings.page_size
        runs, total = await ctl.run(
            lambda conn: integrations.client_runs(conn, client_id, (page - 1) * per, per)
        )
        data = [connect.extraction(client_id, r) for r in runs]
        return connect.page(data, page, per, total, f"/v4/{client_id}/extractions")

    @app.get("/v4/{client_id}/extractions/{job_name}", tags=["connect v4"], status_code=302)
    async def v4_extraction_log(
        client_id: ClientId, job_name: Annotated[str, Path(max_length=64)], key: Caller
    ) -> RedirectResponse:
        """302 to a short-lived URL of the run's log (secrets redacted)."""
        await own(key, client_id)
        parsed = connect.parse_job(job_name)
        if parsed is None or parsed[0] != client_id:
            raise control.NotFound(f"no extraction {job_name}")
        _, source_id, run_id = parsed

        def check(conn: control.Connection) -> None:
            found = integrations.by_id(conn, source_id, client_id)
            integrations.run_log(conn, found["name"], run_id)  # NotFound for another's run

        await ctl.run(check)
        return RedirectResponse(
            connect.signed_log_path(log_secret, job_name, settings.log_url_ttl_s), 302
        )

    @app.get("/v4/logs/{job_name}", tags=["connect v4"], include_in_schema=False)
    async def v4_log(
        job_name: Annotated[str, Path(max_length=64)],
        expires: Annotated[int, Query(ge=0, le=INT8)],
        signature: Annotated[str, Query(max_length=64)],
    ) -> PlainTextResponse:
        """The log a signed URL names (no key: the signature, valid until ``expires``)."""
        parsed = connect.parse_job(job_name)
        if parsed is None or not connect.valid_signature(log_secret, job_name, expires, signature):
            raise ApiError(403, "forbidden", "this log URL is invalid or has expired")
        client_id, source_id, run_id = parsed

        def read(conn: control.Connection) -> dict[str, Any]:
            found = integrations.by_id(conn, source_id, client_id)
            return integrations.run_log(conn, found["name"], run_id)

        found = await ctl.run(read)
        head = f"# {job_name} {found['status']} {found['started_at']} .. {found['ended_at']}\n"
        tail = f"\n# error: {found['error']}\n" if found["error"] else ""
        return PlainTextResponse(head + found["stderr"] + tail)

    @app.post("/v4/sources/{source_id}/sync", tags=["connect v4"])
    async def v4_sync(source_id: ClientId, key: Caller) -> JSONResponse:
        """Start a run now; ``{"job_name"}`` once the extractor has started it. A run already in
        progress: 409 ``already_running`` with its job name."""

        def start(conn: control.Connection) -> tuple[int, dict[str, Any] | None, bool]:
            found = integrations.by_id(conn, source_id, key.client_id)
            busy = integrations.running(conn, found["name"])
            if busy is not None:
                return found["client_id"], busy, True
            last = integrations.last_run_id(conn, found["name"])
            integrations.run_now(conn, found["name"])
            started = integrations.wait_started(conn, found["name"], last, settings.sync_wait_s)
            return found["client_id"], started, False

        client_id, run, busy = await run_long(start)
        if run is None:
            raise ApiError(503, "unavailable", "the run was asked for; no extractor started it yet")
        name = connect.job_name(client_id, source_id, run["run_id"])
        if busy:
            return _error(409, "already_running", f"{name} is running", {}, {"job_name": name})
        return JSONResponse({"job_name": name})

    @app.delete("/v4/sources/{source_id}/sync", tags=["connect v4"])
    async def v4_stop(source_id: ClientId, key: Caller) -> dict[str, Any]:
        """Stop the source's running run (the next run resumes from the saved state)."""

        def stop(conn: control.Connection) -> tuple[int, int | None]:
            found = integrations.by_id(conn, source_id, key.client_id)
            return found["client_id"], integrations.stop(conn, found["name"])

        client_id, run_id = await ctl.run(stop)
        if run_id is None:
            raise ApiError(404, "not_running", f"source {source_id} has no run in progress")
        return {"job_name": connect.job_name(client_id, source_id, run_id), "stopping": True}

    # --- API keys (operators) -----------------------------------------------------------------

    @app.get("/v1/keys", tags=["keys"])
    async def keys_list(key: Caller, after: After = 0, limit: Limit = None) -> dict[str, Any]:
        operator(key)
        n = size(limit)
        rows = await ctl.run(lambda conn: keys.listed(conn, after=after, limit=n + 1))
        return page(rows, "key_id", n)

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
