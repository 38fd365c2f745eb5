"""What the gate refuses before any route runs: an oversized request line (414) or oversized
headers (431), with a JSON body, as RFC 9110 and RFC 6585 name them.

uvicorn's httptools parser sets no limit of its own on either, so without this a client could
send megabytes of URL or headers that every layer (routing, logging, metrics) would handle.
The longest legitimate request line is a webhook URL (~90 bytes) and the headers of a
``target-stitch`` request are well under 1 KiB, so the defaults leave a wide margin.
"""

from __future__ import annotations

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send


class RequestBounds:
    def __init__(self, app: ASGIApp, max_url_bytes: int, max_header_bytes: int) -> None:
        self.app = app
        self.max_url_bytes = max_url_bytes
        self.max_header_bytes = max_header_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            url = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"")
            if url > self.max_url_bytes:
                await _refuse(
                    send, 414, f"the request URL is longer than {self.max_url_bytes} bytes"
                )
                return
            headers = sum(len(k) + len(v) + 4 for k, v in scope.get("headers", ()))
            if headers > self.max_header_bytes:
                await _refuse(
                    send, 431, f"the request headers are larger than {self.max_header_bytes} bytes"
                )
                return
        await self.app(scope, receive, send)


async def _refuse(send: Send, status: int, error: str) -> None:
    body = orjson.dumps({"status": "ERROR", "error": error})
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
