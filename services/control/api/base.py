"""What the routes share: who is asking (the API key), the control-database pool and its
helpers, errors as JSON with stable codes, pages."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Header, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from common import audit, control
from common.db import ControlDb
from services.control import accounts, keys
from services.control.principal import Principal
from services.control.settings import ControlSettings

T = TypeVar("T")
INT8 = 2**63 - 1


class ApiError(Exception):
    """An answer other than success: HTTP status, stable code, message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def error_response(
    status: int,
    code: str,
    message: str,
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> JSONResponse:
    body = {"code": code, "message": message, **(extra or {})}
    return JSONResponse({"error": body}, status, headers=headers)


class Control:
    """What the routes share: settings, the control-database pool, and two threads for the
    long requests (a tap install, a purge) so they hold at most two of its connections."""

    def __init__(self, settings: ControlSettings, db: ControlDb) -> None:
        self.settings = settings
        self.db = db
        self.log_secret = settings.secret_key.get_secret_value()
        self._long = ThreadPoolExecutor(2, thread_name_prefix="control-long")
        # destination tests: their own threads, one at a time per client
        self._probes = ThreadPoolExecutor(4, thread_name_prefix="control-probe")
        self._probing: set[int] = set()

    async def run(self, fn: Callable[[control.Connection], T]) -> T:
        """``fn(conn)`` on a pooled connection, off the event loop; the key's actor goes along
        (``run_in_threadpool`` copies the request's context)."""
        return await run_in_threadpool(self.db.run, fn)

    async def run_long(self, fn: Callable[[control.Connection], T]) -> T:
        context = contextvars.copy_context()
        return await asyncio.get_running_loop().run_in_executor(
            self._long, lambda: context.run(self.db.run, fn, 30.0)
        )

    async def probe(self, client_id: int, fn: Callable[[], T]) -> T:
        """``fn()`` (a destination's round trip) on the probe threads, holding no database
        connection; a client with a test already running gets 429."""
        if client_id in self._probing:
            raise ApiError(429, "too_many_requests", "a test of this destination is running")
        self._probing.add(client_id)
        try:
            return await asyncio.get_running_loop().run_in_executor(self._probes, fn)
        finally:
            self._probing.discard(client_id)

    def size(self, limit: int | None) -> int:
        """A page's size: asked for (at most the maximum), or the default."""
        return min(limit or self.settings.page_size, self.settings.max_page_size)

    async def paged(
        self,
        limit: int | None,
        id_field: str,
        fetch: Callable[[control.Connection, int], list[dict[str, Any]]],
    ) -> dict[str, Any]:
        """A page of ``fetch(conn, n + 1)``'s rows, ``n`` the page's size (see ``page``)."""
        n = self.size(limit)
        return page(await self.run(lambda conn: fetch(conn, n + 1)), id_field, n)

    async def own(self, who: Principal, client_id: int) -> dict[str, Any]:
        """The client, if ``who`` may act for it; 404 (``control.NotFound``) for another
        client's and for an unknown client."""
        found = None
        if who.may_act_for(client_id):
            found = await self.run(lambda conn: accounts.get_client(conn, client_id))
        if found is None:
            raise control.NotFound(f"no client {client_id}")
        return found

    def close(self) -> None:
        self._long.shutdown(wait=False)
        self._probes.shutdown(wait=False)
        self.db.close()


def control_of(request: Request) -> Control:
    found: Control = request.app.state.control
    return found


Ctl = Annotated[Control, Depends(control_of)]


def operator(key: keys.Key) -> None:
    if not key.operator:
        raise ApiError(403, "forbidden", "this needs an operator key")


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
