"""The gate: Stitch Import API v2 and incoming webhooks, durable in Kafka before any 2xx.

Routes are thin: each authenticates, reads the body within limits, calls one pure validator from
``records`` and hands the result to ``Gate.produce``, which answers only after Kafka acknowledged
every message (``acks=all``, idempotent producer). Anything else is a JSON error.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

from fastapi import Depends, FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.requests import ClientDisconnect

from common import control, logs, runtime
from common import metrics as common_metrics
from common.db import ControlDb
from common.wire import HEADER_FORMAT, RecordTooLarge, TableRecords, encode_messages, message_key
from services.gate import api_docs, edge, metrics
from services.gate.auth import LookupUnavailable, TokenCache
from services.gate.body import (
    Malformed,
    NumberTooLong,
    TooDeep,
    check_content_type,
    parse_json,
    read_limited,
)
from services.gate.compiler import CompileBudget, CompileWorker
from services.gate.errors import (
    ApiError,
    batch_error,
    not_authorized,
    status_error,
    unavailable,
)
from services.gate.producer import DurableProducer, NotDelivered, OutgoingMessage
from services.gate.quotas import Limited, Quotas, TableAdmission
from services.gate.records import (
    Limits,
    RequestContext,
    batch_tables,
    push_tables,
    webhook_tables,
)
from services.gate.schemas import Prepared, SchemaCache, SchemaRejected
from services.gate.settings import GateSettings

log = logging.getLogger("skein.gate")
VERSION = "0.1.0"
ACCEPTED = {"status": "Accepted", "message": "The batch is queued to be processed."}
T = TypeVar("T")


# Longer than any "Bearer <token>" we issue; a longer header is cut before it is looked at.
_MAX_AUTHORIZATION = 128


@dataclass
class Gate:
    """Everything a request needs, created once per worker process in the app's lifespan."""

    settings: GateSettings
    producer: DurableProducer
    db: ControlDb
    api_tokens: TokenCache[control.ApiTokenInfo]
    webhooks: TokenCache[control.WebhookInfo]
    schemas: SchemaCache
    quotas: Quotas

    @property
    def limits(self) -> Limits:
        return Limits(self.settings.max_records, self.settings.max_key_length)

    async def client_for(self, authorization: str | None) -> control.ApiTokenInfo:
        scheme, _, token = (authorization or "")[:_MAX_AUTHORIZATION].partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not control.token_has_shape("api", token):
            raise not_authorized()  # never reaches the cache or the database
        return await self._known(self.api_tokens, token)

    async def webhook_for(self, client_id: int, token: str) -> control.WebhookInfo:
        if not control.token_has_shape("webhook", token):
            raise not_authorized()
        hook = await self._known(self.webhooks, token)
        if hook.client_id != client_id:
            raise not_authorized()
        return hook

    async def _known(self, cache: TokenCache[T], token: str) -> T:
        try:
            info = await cache.get(token)
        except LookupUnavailable as exc:
            log.warning(
                "token lookup failed: control database unavailable", extra={"err": str(exc)}
            )
            raise unavailable(
                "Authentication is temporarily unavailable", self.settings.retry_after_s
            ) from exc
        if info is None:
            raise not_authorized()
        return info

    async def body(self, request: Request, *, malformed: Callable[[str], ApiError]) -> Any:
        check_content_type(request.headers.get("content-type"))
        raw = await read_limited(
            request.stream(),
            request.headers.get("content-length"),
            request.headers.get("content-encoding"),
            self.settings.max_body_bytes,
        )
        if not raw.strip():
            raise malformed("The request body is empty")
        try:
            parsed = parse_json(raw, self.settings.max_depth)
        except (TooDeep, NumberTooLong) as exc:
            raise malformed(str(exc)) from exc
        except Malformed as exc:
            raise malformed("Malformed json in the body!") from exc
        # A reserved name may also be spelt with escapes ("\u005fsdc_row"): any escape sends the
        # request down the per-record check.
        # (A lone backslash is found by memchr; most bodies have none.)
        request.state.may_have_reserved = b'"_sdc' in raw or (b"\\" in raw and b"\\u" in raw)
        request.state.raw_bytes = len(raw)
        return parsed

    async def accept(
        self, client: Limited, tables: list[TableRecords], request: Request, endpoint: str
    ) -> None:
        """The client's new tables admitted (its distinct-tables quota), then produced."""
        try:
            await self.quotas.admit_tables(client, [t.header.table_name for t in tables])
        except ControlUnavailable as exc:
            raise unavailable(
                "New tables cannot be admitted now; retry the request", self.settings.retry_after_s
            ) from exc
        await self.produce(tables, request, endpoint)

    async def produce(self, tables: list[TableRecords], request: Request, endpoint: str) -> None:
        """Return only when Kafka acknowledged every record; else 503 with Retry-After."""
        request_id: str = request.state.request_id
        messages: list[OutgoingMessage] = []
        headers: list[tuple[str, str | bytes | None]] = [
            ("request_id", request_id.encode()),
            ("format", HEADER_FORMAT),
        ]
        # One record may fill a message up to the topic's limit, less room for Kafka's framing.
        record_limit = self.settings.kafka_message_limit_bytes - 64 * 1024
        try:
            for table in tables:
                key = message_key(table.header.client_id, table.header.table_name)
                for value in encode_messages(table, self.settings.message_max_bytes, record_limit):
                    messages.append(OutgoingMessage(key, value, headers))
        except RecordTooLarge as exc:
            raise status_error(413, f"Request rejected: {exc}") from exc
        remaining = self.settings.request_timeout_s - (time.monotonic() - request.state.started)
        started = time.monotonic()
        try:
            await self.producer.send(messages, timeout=max(0.05, remaining))
        except NotDelivered as exc:
            metrics.PRODUCE_FAILURES.inc()
            log.warning(
                "records not acknowledged by Kafka",
                extra={"request_id": request_id, "err": str(exc)},
            )
            raise unavailable(
                "The records could not be made durable; retry the request",
                self.settings.retry_after_s,
            ) from exc
        metrics.PRODUCE_SECONDS.observe(time.monotonic() - started)
        if tables:  # one client per request
            client = common_metrics.client_label(tables[0].header.client_id)
            metrics.RECORDS.labels(endpoint, client).inc(sum(len(t.lines) for t in tables))
            metrics.BYTES.labels(endpoint, client).inc(sum(len(m.value) for m in messages))

    def context(self, request: Request, client_id: int) -> RequestContext:
        return RequestContext(
            client_id=client_id,
            received_at=datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z"),
            request_id=request.state.request_id,
            may_have_reserved=request.state.may_have_reserved,
        )


def _gate(request: Request) -> Gate:
    gate: Gate = request.app.state.gate
    return gate


GateDep = Annotated[Gate, Depends(_gate)]
AuthHeader = Annotated[str | None, Header(include_in_schema=False)]


def build_gate(settings: GateSettings) -> Gate:
    producer = DurableProducer(
        {
            **settings.kafka_config(),
            "compression.type": settings.compression,
            "linger.ms": settings.linger_ms,
            "message.max.bytes": settings.kafka_message_limit_bytes,
            # Give up just after the request deadline; idempotence keeps retries duplicate-free.
            "message.timeout.ms": int(settings.request_timeout_s * 1000) + 1000,
            "client.id": "skein-gate",
            "logger": logging.getLogger("skein.gate.kafka"),
        },
        settings.topic,
    )
    db = ControlDb(settings.control_dsn.get_secret_value(), name="skein-gate")

    def lookup(fn: Callable[[Any, str], T]) -> Callable[[str], Awaitable[T]]:
        async def run(token: str) -> T:
            return await asyncio.to_thread(db.run, lambda conn: fn(conn, token))

        return run

    return Gate(
        settings=settings,
        producer=producer,
        db=db,
        api_tokens=TokenCache(
            lookup(control.lookup_api_token), settings.token_ttl_s, settings.token_grace_s
        ),
        webhooks=TokenCache(
            lookup(control.lookup_webhook), settings.token_ttl_s, settings.token_grace_s
        ),
        schemas=SchemaCache(
            settings.schema_cache_size,
            settings.max_schema_bytes,
            CompileWorker(
                settings.schema_compile_timeout_s, settings.schema_compile_memory_bytes
            ).compile,
            CompileBudget(settings.schema_compile_budget_s, settings.schema_compile_failures),
            max_bytes=settings.schema_cache_bytes,
            client_bytes=settings.schema_cache_client_bytes,
        ),
        quotas=Quotas(settings, admit_tables(db)),
    )


class ControlUnavailable(Exception):
    """The control database could not be asked (a new table cannot be admitted)."""


def admit_tables(db: ControlDb) -> TableAdmission:
    async def admit(client_id: int, names: list[str], limit: int) -> list[str]:
        try:
            return await asyncio.to_thread(
                db.run, lambda conn: control.admit_tables(conn, client_id, names, limit)
            )
        except Exception as exc:
            raise ControlUnavailable(str(exc)) from exc

    return admit


def create_app(
    settings: GateSettings | None = None, build: Callable[[GateSettings], Gate] = build_gate
) -> FastAPI:
    """The ASGI app; ``build`` makes the per-process Gate (tests pass fakes)."""
    settings = settings or GateSettings()
    logs.configure()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.gate = build(settings)
        runtime.tune_gc()
        yield
        gate: Gate = app.state.gate
        left = await asyncio.to_thread(gate.producer.close, 30.0)
        gate.db.close()
        log.info("gate stopped", extra={"undelivered": left})

    app = FastAPI(
        title="Skein gate (Import API v2)",
        version=VERSION,
        lifespan=lifespan,
        description=api_docs.DESCRIPTION,
    )
    app.add_middleware(api_docs.ObserveMiddleware)
    app.add_middleware(
        edge.RequestBounds,
        max_url_bytes=settings.max_url_bytes,
        max_header_bytes=settings.max_header_bytes,
    )

    @app.exception_handler(ApiError)
    async def api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(exc.body, exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
        # Only path parameters are declared (a webhook URL's client_id): JSON in the documented
        # {"status", "message"} form rather than FastAPI's own 422 {"detail": [...]}.
        where = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', 'invalid')}"
            for e in exc.errors()
        )
        return JSONResponse({"status": "ERROR", "message": f"Invalid request: {where}"}, 400)

    @app.exception_handler(ClientDisconnect)
    async def client_left(request: Request, _exc: ClientDisconnect) -> JSONResponse:
        # The client hung up while sending its body: nothing was produced and nobody reads an
        # answer. 499 (as nginx names it) keeps this out of the 5xx counts and error logs.
        log.info("client disconnected mid-request", extra={"request_id": request.state.request_id})
        return JSONResponse({"status": "ERROR", "message": "Client closed the request"}, 499)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", extra={"request_id": request.state.request_id})
        return JSONResponse({"status": "ERROR", "message": "Internal error"}, 500)

    @app.get("/v2/import/status", responses=api_docs.STATUS_RESPONSES)
    async def import_status() -> dict[str, str]:
        """Is the Import API up? No authentication."""
        return {"status": "OK", "name": "skein-gate", "version": VERSION}

    @app.post(
        "/v2/import/batch",
        status_code=202,
        responses=api_docs.BATCH_RESPONSES,
        openapi_extra=api_docs.BATCH_BODY,
    )
    async def import_batch(
        request: Request, gate: GateDep, authorization: AuthHeader = None
    ) -> Any:
        """One table's records with a JSON Schema; 202 once every record is durable in Kafka."""
        client = await gate.client_for(authorization)
        gate.quotas.check_rate(client)
        async with gate.quotas.concurrent(client):
            body = await gate.body(request, malformed=batch_error)
            gate.quotas.charge_bytes(client, request.state.raw_bytes)
            try:  # a new schema compiles in the worker, off the event loop
                prepared = await gate.schemas.prepare(
                    client.client_id, body.get("schema") if isinstance(body, dict) else None
                )
            except SchemaRejected as exc:
                raise batch_error(f"Invalid schema: {exc}") from exc
            tables = batch_tables(
                body,
                gate.context(request, client.client_id),
                gate.limits,
                gate.schemas if prepared is None else Prepared(prepared),
            )
            await gate.accept(client, tables, request, "batch")
        return ACCEPTED

    @app.post(
        "/v2/import/push",
        status_code=202,
        responses=api_docs.PUSH_RESPONSES,
        openapi_extra=api_docs.PUSH_BODY,
    )
    async def import_push(request: Request, gate: GateDep, authorization: AuthHeader = None) -> Any:
        """Records of one or more tables, no schema; 202 once every record is durable."""
        client = await gate.client_for(authorization)
        gate.quotas.check_rate(client)
        async with gate.quotas.concurrent(client):
            body = await gate.body(request, malformed=_push_malformed)
            gate.quotas.charge_bytes(client, request.state.raw_bytes)
            tables = push_tables(body, gate.context(request, client.client_id), gate.limits)
            await gate.accept(client, tables, request, "push")
        return ACCEPTED

    @app.post(
        "/v2/import/validate",
        responses=api_docs.VALIDATE_RESPONSES,
        openapi_extra=api_docs.PUSH_BODY,
    )
    async def import_validate(
        request: Request, gate: GateDep, authorization: AuthHeader = None
    ) -> Any:
        """Check a /push body without storing anything."""
        client = await gate.client_for(authorization)
        body = await gate.body(request, malformed=_push_malformed)
        push_tables(body, gate.context(request, client.client_id), gate.limits)
        return {"status": "OK", "message": "Batch is valid!"}

    @app.post(
        "/v1/clients/{client_id}/token/{webhook_token}",
        status_code=202,
        responses=api_docs.WEBHOOK_RESPONSES,
        openapi_extra=api_docs.WEBHOOK_BODY,
    )
    async def incoming_webhook(
        client_id: int, webhook_token: str, request: Request, gate: GateDep
    ) -> Any:
        """Any JSON object (or array of objects): one row each in the webhook's table."""
        hook = await gate.webhook_for(client_id, webhook_token)
        gate.quotas.check_rate(hook)
        async with gate.quotas.concurrent(hook):
            body = await gate.body(request, malformed=_push_malformed)
            gate.quotas.charge_bytes(hook, request.state.raw_bytes)
            tables = webhook_tables(
                body, gate.context(request, hook.client_id), gate.limits, hook, time.time_ns()
            )
            await gate.accept(hook, tables, request, "webhook")
        return ACCEPTED

    @app.get("/healthz", include_in_schema=True)
    async def healthz() -> dict[str, str]:
        """The process is alive."""
        return {"status": "OK"}

    @app.get("/readyz", responses={503: {"description": "Kafka or the control DB unreachable"}})
    async def readyz(gate: GateDep) -> Response:
        """Kafka and the control database are reachable."""
        kafka_ok, db_ok = await asyncio.gather(
            asyncio.to_thread(gate.producer.reachable), asyncio.to_thread(gate.db.ping)
        )
        body = {"kafka": kafka_ok, "control_db": db_ok}
        if kafka_ok and db_ok:
            return JSONResponse({"status": "OK", **body})
        return JSONResponse(
            {"status": "ERROR", **body}, 503, headers={"Retry-After": str(settings.retry_after_s)}
        )

    # /metrics is served on the internal SKEIN_GATE_METRICS_PORT (common.serve), not here.
    return app


def _push_malformed(message: str) -> ApiError:
    return status_error(400, message)
