"""The gate: Stitch Import API v2 and incoming webhooks, durable in Kafka before any 2xx.

Routes are thin: each authenticates, reads the body within limits, calls one pure validator from
``records`` and hands the result to ``Gate.produce``, which answers only after Kafka acknowledged
every message (``acks=all``, idempotent producer). Anything else is a JSON error. Here: the app,
its error answers and its routes; the steps they share, and the per-process ``Gate`` that holds
the producer, pools and caches, are in ``services.gate.intake``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.requests import ClientDisconnect

from common import logs, runtime
from services.gate import api_docs, edge
from services.gate.errors import ApiError, batch_error, status_error
from services.gate.intake import Gate, build_gate
from services.gate.records import batch_tables, push_tables, webhook_tables
from services.gate.schemas import Prepared, SchemaRejected
from services.gate.settings import GateSettings

log = logging.getLogger("skein.gate")
VERSION = "0.1.0"
ACCEPTED = {"status": "Accepted", "message": "The batch is queued to be processed."}


def _gate(request: Request) -> Gate:
    gate: Gate = request.app.state.gate
    return gate


GateDep = Annotated[Gate, Depends(_gate)]
AuthHeader = Annotated[str | None, Header(include_in_schema=False)]


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
            raw = await gate.read(request)
            # The native lane decides the bodies it can whole; the others are parsed here.
            fast = gate.fast_batch(raw)
            body = gate.parse(raw, request, malformed=batch_error) if fast is None else None
            gate.quotas.charge_bytes(client, request.state.raw_bytes)
            schema = fast.schema() if fast is not None else _schema_of(body)
            try:  # a new schema compiles in the worker, off the event loop
                prepared = await gate.schemas.prepare(client.client_id, schema)
            except SchemaRejected as exc:
                raise batch_error(f"Invalid schema: {exc}") from exc
            context = gate.context(request, client.client_id)
            if fast is not None:
                tables = [fast.table(context, schema)]
            else:
                tables = batch_tables(
                    body,
                    context,
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


def _schema_of(body: Any) -> Any:
    return body.get("schema") if isinstance(body, dict) else None


def _push_malformed(message: str) -> ApiError:
    return status_error(400, message)
