"""The control service's FastAPI app: its error answers, middleware and routers."""

from __future__ import annotations

import importlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import psycopg2
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from common import control, logs
from common.db import ControlDb
from services.control import console, users
from services.control import hooks as hooks_domain
from services.control.api import (
    batches,
    clients,
    connect_v4,
    credentials,
    destination,
    hooks,
    integrations,
)
from services.control.api.base import ApiError, Control, error_response
from services.control.api.middleware import BodyLimit, Observe
from services.control.delivery import DeliveryWorker
from services.control.settings import ControlSettings
from services.spool import operations, queue

log = logging.getLogger("skein.control")
# the domain's refusals, answered with their message (the most specific class decides)
DOMAIN_ERRORS: tuple[tuple[type[Exception], int, str], ...] = (
    (operations.NotFound, 404, "not_found"),
    (queue.Conflict, 409, "conflict"),
    (hooks_domain.Busy, 409, "conflict"),
    (control.NotFound, 404, "not_found"),
    (control.ControlError, 400, "invalid_request"),
)


def answer_with(status: int, code: str) -> Callable[[Request, Exception], Awaitable[Response]]:
    """An exception handler answering ``status`` and ``code`` with the exception's message."""

    async def answer(_r: Request, exc: Exception) -> Response:
        return error_response(status, code, str(exc))

    return answer


def create_app(settings: ControlSettings | None = None) -> FastAPI:
    settings = settings or ControlSettings()
    logs.configure()
    db = ControlDb(settings.control_dsn.get_secret_value(), settings.db_pool_size, "skein-control")
    ctl = Control(settings, db)
    hooks_db = ControlDb(settings.control_dsn.get_secret_value(), 2, "skein-control-hooks")
    deliveries = DeliveryWorker(settings, hooks_db)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        users.warm()  # an unknown name's first login costs what every other one does
        deliveries.start()
        yield
        deliveries.stop()
        hooks_db.close()
        ctl.close()

    app = FastAPI(
        title="Skein control API",
        version="1",
        lifespan=lifespan,
        description=importlib.import_module("services.control.api").__doc__ or "",
    )
    app.state.control = ctl
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(Observe)

    @app.exception_handler(ApiError)
    async def apierror_response(_r: Request, exc: ApiError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else {}
        if exc.status in (429, 503):
            headers["Retry-After"] = "5"
        return error_response(exc.status, exc.code, exc.message, headers)

    for refusal, status, code in DOMAIN_ERRORS:
        app.add_exception_handler(refusal, answer_with(status, code))

    @app.exception_handler(RequestValidationError)
    async def invalid(_r: Request, exc: RequestValidationError) -> JSONResponse:
        where = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', 'invalid')}"
            for e in exc.errors()
        )
        return error_response(422, "invalid_request", f"invalid request: {where}")

    @app.exception_handler(StarletteHTTPException)
    async def httperror_response(_r: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}.get(
            exc.status_code, "http_error"
        )
        return error_response(exc.status_code, code, str(exc.detail))

    @app.exception_handler(psycopg2.OperationalError)
    async def db_down(_r: Request, _exc: Exception) -> JSONResponse:
        return error_response(
            503, "unavailable", "the control database is unavailable", {"Retry-After": "5"}
        )

    @app.exception_handler(TimeoutError)
    async def db_busy(_r: Request, _exc: Exception) -> JSONResponse:
        return error_response(
            503, "unavailable", "the control database is busy", {"Retry-After": "1"}
        )

    @app.exception_handler(Exception)
    async def unexpected(_r: Request, _exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return error_response(500, "internal", "internal error")

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        """The process answers (no key; also on the metrics port with /readyz)."""
        return {"status": "ok"}

    for routes in (clients, credentials, destination, hooks, integrations, batches, connect_v4):
        app.include_router(routes.router)
    console.mount(app)
    return app
