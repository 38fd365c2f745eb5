"""Console sessions, their CSRF tokens, and the failed-login limits, in the control database
(every control worker process sees the same ones).

The cookie holds 256 random bits; only their SHA-256 is stored, so a copy of the database logs
no one in. A session ends when unused for ``console_idle_s`` or ``console_max_session_s`` after
its login, at logout, or when its user is removed. Each session has its own CSRF token, which
every form and every htmx request carries back.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from common import control
from services.control.users import User

COOKIE = "skein_session"
# the login form's CSRF token, before there is a session (double submit: cookie and field)
LOGIN_COOKIE = "skein_login"
_BYTES = 32
_TOKEN_LENGTH = len(secrets.token_urlsafe(_BYTES))


@dataclass(frozen=True)
class Session:
    user: User
    csrf_token: str


def _hash(session_id: str) -> bytes:
    return hashlib.sha256(session_id.encode()).digest()


def well_formed(value: str | None) -> bool:
    """A cookie or token of the shape this module issues (others are not looked up)."""
    return (
        value is not None
        and len(value) == _TOKEN_LENGTH
        and all(c.isalnum() or c in "-_" for c in value)
    )


def new_token() -> str:
    return secrets.token_urlsafe(_BYTES)


def same_token(given: str | None, expected: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


def start(conn: control.Connection, user: User, max_age_s: int) -> tuple[str, Session]:
    """A new session for ``user``: (the cookie's value, the session); sessions past their
    lifetime are cleared on the way."""
    session_id = new_token()
    csrf = new_token()
    with conn, conn.cursor() as cur:
        cur.execute(
            "DELETE FROM console_sessions WHERE created_at < now() - make_interval(secs => %s)",
            (max_age_s,),
        )
        cur.execute(
            "INSERT INTO console_sessions (session_hash, user_id, csrf_token) VALUES (%s, %s, %s)",
            (_hash(session_id), user.user_id, csrf),
        )
    return session_id, Session(user, csrf)


def resume(
    conn: control.Connection, session_id: str | None, idle_s: int, max_age_s: int
) -> Session | None:
    """The live session this cookie names, now marked used; None when there is none (or it
    has expired, which ends it)."""
    if not well_formed(session_id):
        return None
    assert session_id is not None
    with conn, conn.cursor() as cur:
        cur.execute(
            """UPDATE console_sessions s SET last_seen_at = now()
               FROM console_users u
               WHERE s.session_hash = %s AND u.user_id = s.user_id
                 AND s.last_seen_at > now() - make_interval(secs => %s)
                 AND s.created_at > now() - make_interval(secs => %s)
               RETURNING u.user_id, u.name, u.client_id, s.csrf_token""",
            (_hash(session_id), idle_s, max_age_s),
        )
        row = cur.fetchone()
        if row is None:
            cur.execute(
                "DELETE FROM console_sessions WHERE session_hash = %s", (_hash(session_id),)
            )
            return None
    user_id, name, client_id, csrf = row
    return Session(User(client_id=client_id, user_id=user_id, name=name), csrf)


def end(conn: control.Connection, session_id: str | None) -> None:
    if not well_formed(session_id):
        return
    assert session_id is not None
    with conn, conn.cursor() as cur:
        cur.execute("DELETE FROM console_sessions WHERE session_hash = %s", (_hash(session_id),))


# --- failed logins ------------------------------------------------------------------------


def subjects(name: str, address: str) -> tuple[str, str]:
    return f"user:{name[:100]}", f"addr:{address}"


def locked_out(
    conn: control.Connection,
    name: str,
    address: str,
    per_user: int,
    per_address: int,
    window_s: int,
) -> bool:
    """Has this user name, or this address, failed to log in too often within the window?
    (Counted before the password is checked: a locked-out guess costs no hash.)"""
    user, addr = subjects(name, address)
    with conn, conn.cursor() as cur:
        cur.execute(
            """SELECT count(*) FILTER (WHERE subject = %(user)s),
                      count(*) FILTER (WHERE subject = %(addr)s)
               FROM console_login_failures
               WHERE subject IN (%(user)s, %(addr)s)
                 AND failed_at > now() - make_interval(secs => %(window)s)""",
            {"user": user, "addr": addr, "window": window_s},
        )
        by_user, by_address = cur.fetchone()  # type: ignore[misc]
    return bool(by_user >= per_user or by_address >= per_address)


def failed(conn: control.Connection, name: str, address: str, window_s: int) -> None:
    """Count one failed login against the name and the address; old failures are pruned."""
    with conn, conn.cursor() as cur:
        cur.execute(
            "DELETE FROM console_login_failures"
            " WHERE failed_at < now() - make_interval(secs => %s)",
            (window_s,),
        )
        cur.execute(
            "INSERT INTO console_login_failures (subject) VALUES (%s), (%s)",
            subjects(name, address),
        )


def succeeded(conn: control.Connection, name: str) -> None:
    """A user who logged in starts their count again (the address's count stays)."""
    with conn, conn.cursor() as cur:
        cur.execute(
            "DELETE FROM console_login_failures WHERE subject = %s", (subjects(name, "")[0],)
        )
