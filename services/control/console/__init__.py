"""The web console: the control service's pages at ``/`` (port 8082), for operators and for
each client's users.

Server-rendered (Jinja2) with htmx for the parts that refresh or change in place; htmx is
vendored under ``static/`` (pinned, BSD-0), nothing comes from a CDN and nothing is built.
Users log in with a password (``skein users``); every page and action goes through the same
domain functions as the HTTP API, and a client's user meets another client's pages as 404.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import Response
from fastapi.staticfiles import StaticFiles

from services.control.console import access, auth, destination, integrations, pages
from services.control.console.web import (
    STATIC,
    LoggedOut,
    PageError,
    error_page,
    is_htmx,
    login_redirect,
)


def mount(app: FastAPI) -> None:
    """Add the console's routes, its static files and its error pages to ``app``."""

    @app.exception_handler(PageError)
    async def page_error(request: Request, exc: PageError) -> Response:
        return error_page(request, exc.status, exc.message)

    @app.exception_handler(LoggedOut)
    async def logged_out(request: Request, _exc: LoggedOut) -> Response:
        if is_htmx(request):  # a part refreshing after the session ended: the whole page goes
            return Response(status_code=204, headers={"HX-Redirect": "/"})
        return login_redirect()

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    for routes in (auth, pages, destination, access, integrations):
        app.include_router(routes.router)
