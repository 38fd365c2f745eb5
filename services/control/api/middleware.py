"""The request size bound, and per-route metrics and a log line per request."""

from __future__ import annotations

import logging
import time

from fastapi import HTTPException
from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.control.api.base import error_response

log = logging.getLogger("skein.control")
REQUESTS = Counter(
    "skein_control_requests_total", "API requests by route template and status", ["route", "status"]
)
REQUEST_SECONDS = Histogram(
    "skein_control_request_duration_seconds",
    "API request latency by route template",
    ["route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)


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
        too_big = error_response(
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
                    # an HTTPException: FastAPI turns anything else raised while reading the
                    # body into a 400 "error parsing the body"
                    raise HTTPException(413, f"the request body exceeds {self.max_bytes} bytes")
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
