"""The gate's OpenAPI description (request bodies, error forms) and its observing middleware."""

from __future__ import annotations

import logging
import re
import time
import uuid
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.gate import metrics

log = logging.getLogger("skein.gate.access")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")

DESCRIPTION = """Stitch Import API v2 compatible. A 2xx means every record of the request is
acknowledged by Kafka on at least two of three brokers. 503 (with Retry-After) means nothing may
be assumed stored: retry the same request; sequences make the retry harmless."""


def _obj(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": required}


_STR = {"type": "string"}
_STATUS_MESSAGE = _obj({"status": {"const": "ERROR"}, "message": _STR}, ["status", "message"])
_BATCH_ERROR = _obj({"error": _STR}, ["error"])
_UNAUTHORIZED = _obj({"message": {"const": "Not Authorized"}}, ["message"])
_FORBIDDEN = _obj(
    {"status": _STR, "error": {"const": "Forbidden"}, "errors": _obj({"error": _STR}, ["error"])},
    ["status", "error", "errors"],
)
_UNPROCESSABLE = _obj(
    {
        "status": _STR,
        "error": _STR,
        "errors": {"type": "array", "items": _obj({"reason": _STR}, ["reason"])},
    },
    ["status", "error", "errors"],
)
_ACCEPTED = _obj({"status": {"const": "Accepted"}, "message": _STR}, ["status", "message"])


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_RETRY = {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}}
_COMMON: dict[int | str, dict[str, Any]] = {
    401: _json(_UNAUTHORIZED, "Missing, unknown or revoked token"),
    413: _json(_STATUS_MESSAGE, "Body (or inflated gzip body) over 20 MB, or a record too large"),
    415: _json(_STATUS_MESSAGE, "Content-Type is not application/json, or unsupported encoding"),
    429: {**_json(_STATUS_MESSAGE, "Client over its rate limit"), "headers": _RETRY},
    503: {
        **_json(_STATUS_MESSAGE, "Kafka did not acknowledge in time, or auth unavailable"),
        "headers": _RETRY,
    },
}

STATUS_RESPONSES: dict[int | str, dict[str, Any]] = {}
BATCH_RESPONSES = {
    202: _json(_ACCEPTED, "Every record is durable in Kafka"),
    400: _json(_BATCH_ERROR, "Any validation error of a batch"),
    **_COMMON,
}
PUSH_RESPONSES = {
    202: _json(_ACCEPTED, "Every record is durable in Kafka"),
    400: _json(_STATUS_MESSAGE, "Malformed JSON, not an array, or 0 / over 20,000 records"),
    403: _json(_FORBIDDEN, "A record's client_id is not the token's client"),
    422: _json(_UNPROCESSABLE, "Records failing field rules"),
    **_COMMON,
}
VALIDATE_RESPONSES = {
    200: _json(_obj({"status": {"const": "OK"}, "message": _STR}, ["status"]), "Valid"),
    **{k: v for k, v in PUSH_RESPONSES.items() if k != 202},
}
WEBHOOK_RESPONSES = {
    202: _json(_ACCEPTED, "Every record is durable in Kafka"),
    400: _json(_STATUS_MESSAGE, "Malformed JSON, not objects, missing key field"),
    **_COMMON,
}

_MESSAGE = _obj(
    {
        "action": {"enum": ["upsert", "activate_version"]},
        "sequence": {"type": "integer", "minimum": 0, "maximum": 9223372036854775807},
        "data": {"type": "object"},
        "time_extracted": {"type": "string", "format": "date-time"},
    },
    ["action", "sequence"],
)
BATCH_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": _obj(
                    {
                        "table_name": {"type": "string", "minLength": 1},
                        "schema": _obj({"properties": {"type": "object"}}, ["properties"]),
                        "messages": {
                            "type": "array",
                            "items": _MESSAGE,
                            "minItems": 1,
                            "maxItems": 20000,
                        },
                        "key_names": {"type": "array", "items": _STR},
                        "table_version": {"type": "integer"},
                        "bookmark_names": {"type": "array", "items": _STR},
                    },
                    ["table_name", "schema", "messages"],
                )
            }
        },
    }
}
PUSH_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": 20000,
                    "items": _obj(
                        {
                            "client_id": {"type": "integer"},
                            "table_name": _STR,
                            "sequence": {"type": "integer"},
                            "action": {"const": "upsert"},
                            "key_names": {"type": "array", "items": _STR},
                            "data": {"type": "object"},
                        },
                        ["client_id", "table_name", "sequence", "action", "key_names", "data"],
                    ),
                }
            }
        },
    }
}
WEBHOOK_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "oneOf": [
                        {"type": "object"},
                        {
                            "type": "array",
                            "items": {"type": "object"},
                            "minItems": 1,
                            "maxItems": 20000,
                        },
                    ]
                }
            }
        },
    }
}


class ObserveMiddleware:
    """Request id, metrics and one JSON access-log line per request, all by route template
    (``/v1/clients/{client_id}/token/{webhook_token}``), so webhook tokens never leak."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.monotonic()
        supplied = _header(scope, b"x-request-id")
        request_id = supplied if supplied and _REQUEST_ID.match(supplied) else uuid.uuid4().hex
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        state["started"] = started
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        metrics.IN_FLIGHT.inc()
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            metrics.IN_FLIGHT.dec()
            route_obj = scope.get("route")
            route = getattr(route_obj, "path", None) or "unmatched"
            elapsed = time.monotonic() - started
            metrics.REQUESTS.labels(route, str(status)).inc()
            metrics.REQUEST_SECONDS.labels(route).observe(elapsed)
            log.info(
                "request",
                extra={
                    "method": scope["method"],
                    "route": route,
                    "status": status,
                    "ms": round(elapsed * 1000, 1),
                    "request_id": request_id,
                },
            )


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return str(value.decode("latin-1"))
    return None
