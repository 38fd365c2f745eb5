"""``/``: the login form, or the overview once logged in; ``/login`` and ``/logout``.

Logins are limited per user name and per address (failures within a window, counted in the
control database, before any password is hashed); a login form carries its own CSRF token
(a cookie and a field that must match), since there is no session yet.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response

from services.control import users
from services.control.api.base import control_of
from services.control.console import overview, sessions
from services.control.console.web import (
    Changer,
    cookie_secure,
    current_session,
    login_redirect,
    render,
)

router = APIRouter(include_in_schema=False)


def login_form(
    request: Request, error: str | None = None, name: str = "", status: int = 200
) -> Response:
    token = sessions.new_token()
    response = render(
        request, "login.html", {"login_csrf": token, "error": error, "name": name}, status
    )
    response.set_cookie(
        sessions.LOGIN_COOKIE,
        token,
        max_age=3600,
        httponly=True,
        samesite="strict",
        secure=cookie_secure(request),
        path="/login",
    )
    return response


@router.get("/")
async def home(request: Request) -> Response:
    """The overview for a logged-in user; the login form for anyone else."""
    session = await current_session(request)
    if session is None:
        return login_form(request)
    user = session.user
    ctl = control_of(request)
    # a client's user sees its own client's figures and alerts only
    figures = await overview.gather(ctl.settings, client_id=user.client_id)
    return render(request, "overview.html", figures)


@router.post("/login")
async def login(
    request: Request,
    name: Annotated[str, Form(max_length=200)] = "",
    password: Annotated[str, Form(max_length=users.MAX_PASSWORD)] = "",
    csrf: Annotated[str, Form(max_length=100)] = "",
) -> Response:
    ctl = control_of(request)
    settings = ctl.settings
    if not sessions.same_token(csrf, request.cookies.get(sessions.LOGIN_COOKIE) or "\0"):
        return login_form(request, "This form has expired: log in again.", name, 403)
    address = request.client.host if request.client else "unknown"
    if await ctl.run(
        lambda conn: sessions.locked_out(
            conn,
            name,
            address,
            settings.login_failures_per_user,
            settings.login_failures_per_address,
            settings.login_window_s,
        )
    ):
        minutes = max(1, settings.login_window_s // 60)
        response = login_form(
            request, f"Too many failed logins. Try again in {minutes} minutes.", name, 429
        )
        response.headers["Retry-After"] = str(settings.login_window_s)
        return response
    user = await ctl.run(lambda conn: users.authenticate(conn, name, password))
    if user is None:
        await ctl.run(lambda conn: sessions.failed(conn, name, address, settings.login_window_s))
        return login_form(request, "Wrong user name or password.", name, 401)
    await ctl.run(lambda conn: sessions.succeeded(conn, name))
    session_id, _ = await ctl.run(
        lambda conn: sessions.start(conn, user, settings.console_max_session_s)
    )
    response = login_redirect()
    response.set_cookie(
        sessions.COOKIE,
        session_id,
        httponly=True,
        samesite="strict",
        secure=cookie_secure(request),
        path="/",
    )
    response.delete_cookie(sessions.LOGIN_COOKIE, path="/login")
    return response


@router.post("/logout")
async def logout(request: Request, _user: Changer) -> Response:
    ctl = control_of(request)
    cookie = request.cookies.get(sessions.COOKIE)
    await ctl.run(lambda conn: sessions.end(conn, cookie))
    response = login_redirect()
    response.delete_cookie(sessions.COOKIE, path="/")
    return response
