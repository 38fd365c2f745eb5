"""What the console's pages share: templates, the logged-in viewer, CSRF, and errors as pages.

Every page is rendered on the server (Jinja2, autoescaped); htmx (vendored, served from
``/static``) swaps in the parts that change. A page of another client's answers 404, as the
API does; every change goes through the control plane's domain functions, as the API's do.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Form, Header, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

from common import audit, control
from services.control.api.base import Control, control_of
from services.control.console import sessions
from services.control.users import User

T = TypeVar("T")
HERE = Path(__file__).parent
STATIC = HERE / "static"
HTMX = next(STATIC.glob("htmx-*.min.js")).name
TEMPLATES = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(("html",)),
    trim_blocks=True,
    lstrip_blocks=True,
)


def when(value: str | None, missing: str = "—") -> str:
    """An ISO timestamp as the pages show it: ``2026-12-06 04:22:49 UTC``."""
    if not value:
        return missing
    try:
        at = datetime.fromisoformat(value).astimezone(UTC)
    except ValueError:
        return value
    return at.strftime("%Y-%m-%d %H:%M:%S UTC")


TEMPLATES.filters["when"] = when
# Scripts and styles from this origin only: no inline script, no CDN, no framing.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; "
    "script-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


class PageError(Exception):
    """An answer other than the page: an error page with this status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class LoggedOut(Exception):
    """No live session: back to the login form."""


def render(
    request: Request,
    template: str,
    context: dict[str, Any] | None = None,
    status: int = 200,
    headers: dict[str, str] | None = None,
) -> HTMLResponse:
    session: sessions.Session | None = getattr(request.state, "session", None)
    body = TEMPLATES.get_template(template).render(
        request=request,
        viewer=session.user if session else None,
        csrf=session.csrf_token if session else "",
        htmx=HTMX,
        **(context or {}),
    )
    return HTMLResponse(body, status, headers={**SECURITY_HEADERS, **(headers or {})})


def error_page(request: Request, status: int, message: str) -> HTMLResponse:
    return render(request, "error.html", {"status": status, "message": message}, status)


def login_redirect() -> Response:
    return RedirectResponse("/", 303, headers=SECURITY_HEADERS)


def cookie_secure(request: Request) -> bool:
    mode = control_of(request).settings.console_secure_cookie
    return mode == "always" or (mode == "auto" and request.url.scheme == "https")


async def current_session(request: Request) -> sessions.Session | None:
    ctl = control_of(request)
    cookie = request.cookies.get(sessions.COOKIE)
    if not sessions.well_formed(cookie):
        return None
    settings = ctl.settings
    found = await ctl.run(
        lambda conn: sessions.resume(
            conn, cookie, settings.console_idle_s, settings.console_max_session_s
        )
    )
    if found is not None:
        request.state.session = found
        audit.set_actor(found.user.actor)  # this request's changes are this user's
    return found


async def viewer(request: Request) -> User:
    """The logged-in user (else back to the login form)."""
    found = await current_session(request)
    if found is None:
        raise LoggedOut()
    return found.user


async def checked_viewer(
    request: Request,
    csrf: Annotated[str | None, Form()] = None,
    x_csrf_token: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> User:
    """The logged-in user of a change: the session's CSRF token must come back with it, in
    the form (``csrf``) or, from htmx, the ``X-CSRF-Token`` header."""
    user = await viewer(request)
    session: sessions.Session = request.state.session
    if not sessions.same_token(x_csrf_token or csrf, session.csrf_token):
        raise PageError(403, "This form has expired. Reload the page and try again.")
    return user


Viewer = Annotated[User, Depends(viewer)]
Changer = Annotated[User, Depends(checked_viewer)]


def operator(user: User) -> None:
    if not user.operator:
        raise PageError(404, "Not found.")


async def own(ctl: Control, user: User, client_id: int) -> dict[str, Any]:
    """The client, if the user may see it (404 otherwise, as for an unknown client)."""
    try:
        return await ctl.own(user, client_id)
    except control.NotFound:
        raise PageError(404, f"No client {client_id}.") from None


async def client_page(
    request: Request,
    client_id: int,
    template: str,
    read: Callable[[control.Connection], dict[str, Any]],
    status: int = 200,
    **context: Any,
) -> Response:
    """A page of one client the user may see: what ``read`` finds, with ``client`` and
    ``context``, rendered with ``template``."""
    ctl = control_of(request)
    client = await own(ctl, request.state.session.user, client_id)
    found = await ctl.run(read)
    return render(request, template, {**found, **context, "client": client}, status)


async def attempt(
    action: Callable[[], Awaitable[T]],
) -> tuple[T | None, str | None]:
    """(result, None), or (None, the domain's refusal as the user should read it)."""
    try:
        return await action(), None
    except control.NotFound as exc:
        raise PageError(404, str(exc)) from None
    except control.ControlError as exc:
        return None, str(exc)


def is_htmx(request: Request) -> bool:
    return request.headers.get("HX-Request") == "true"
