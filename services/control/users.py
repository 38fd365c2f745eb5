"""Users of the web console: the domain both ``skein users`` and the console's login use.

A user is an operator (every client) or one client's. Passwords are hashed with argon2id
(``argon2-cffi``'s defaults, rehashed on login when those change); a user name that is not
there costs the same hash as a wrong password, so timing tells nothing.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any

import argon2
from argon2.exceptions import InvalidHashError, VerificationError

from common import audit, control
from services.control.principal import Principal

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,99}")
MIN_PASSWORD = 12
MAX_PASSWORD = 1024
_HASHER = argon2.PasswordHasher()


@functools.cache
def _dummy() -> str:
    """Verified against when the name is unknown: the same work as a real user's check. Made on
    first use (the control service's start; not every CLI command that imports this)."""
    return _HASHER.hash("not a password of anyone's")


def warm() -> None:
    _dummy()


@dataclass(frozen=True)
class User(Principal):
    """Who is logged in to the console."""

    user_id: int
    name: str

    @property
    def actor(self) -> str:
        """The audit log's actor for changes made in this user's session."""
        return f"user:{self.name}"


def check_name(name: str) -> None:
    if not NAME.fullmatch(name):
        raise control.ControlError(
            "a user name is 1-100 of letters, digits and . _ @ -, starting with a letter or digit"
        )


def check_password(password: str) -> None:
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise control.ControlError(
            f"a password is {MIN_PASSWORD} to {MAX_PASSWORD} characters long"
        )


def create(
    conn: control.Connection, name: str, client_id: int | None, password: str
) -> dict[str, Any]:
    """A new user of one client's (or, ``client_id`` None, an operator)."""
    check_name(name)
    check_password(password)
    hashed = _HASHER.hash(password)
    with conn, conn.cursor() as cur:
        if client_id is not None:
            cur.execute("SELECT 1 FROM clients WHERE client_id = %s", (client_id,))
            if cur.fetchone() is None:
                raise control.NotFound(f"no client {client_id}")
        cur.execute(
            "INSERT INTO console_users (name, client_id, password_hash) VALUES (%s, %s, %s)"
            " ON CONFLICT (name) DO NOTHING RETURNING user_id, created_at",
            (name, client_id, hashed),
        )
        row = cur.fetchone()
        if row is None:
            raise control.ControlError(f"user {name!r} exists")
        audit.record(cur, "user.create", client_id=client_id, subject=f"user {name}", details={})
    return {
        "user_id": row[0],
        "name": name,
        "client_id": client_id,
        "role": "operator" if client_id is None else "client",
        "created_at": row[1].isoformat(),
    }


def listed(conn: control.Connection) -> list[dict[str, Any]]:
    with conn, conn.cursor() as cur:
        cur.execute("SELECT user_id, name, client_id, created_at FROM console_users ORDER BY name")
        return [
            {
                "user_id": user_id,
                "name": name,
                "client_id": client_id,
                "role": "operator" if client_id is None else "client",
                "created_at": created_at.isoformat(),
            }
            for user_id, name, client_id, created_at in cur.fetchall()
        ]


def remove(conn: control.Connection, name: str) -> bool:
    """Remove a user; their sessions end with them."""
    with conn, conn.cursor() as cur:
        cur.execute("DELETE FROM console_users WHERE name = %s RETURNING client_id", (name,))
        row = cur.fetchone()
        if row is not None:
            audit.record(cur, "user.remove", client_id=row[0], subject=f"user {name}")
        return row is not None


def authenticate(conn: control.Connection, name: str, password: str) -> User | None:
    """The user whose name and password these are, else None (at the same cost)."""
    if not NAME.fullmatch(name) or len(password) > MAX_PASSWORD:
        _verify(_dummy(), password[:MAX_PASSWORD])
        return None
    with conn, conn.cursor() as cur:
        cur.execute(
            "SELECT user_id, client_id, password_hash FROM console_users WHERE name = %s",
            (name,),
        )
        row = cur.fetchone()
    if row is None:
        _verify(_dummy(), password)
        return None
    user_id, client_id, hashed = row
    if not _verify(hashed, password):
        return None
    if _HASHER.check_needs_rehash(hashed):
        with conn, conn.cursor() as cur:
            cur.execute(
                "UPDATE console_users SET password_hash = %s WHERE user_id = %s",
                (_HASHER.hash(password), user_id),
            )
    return User(client_id=client_id, user_id=user_id, name=name)


def _verify(hashed: str, password: str) -> bool:
    try:
        return _HASHER.verify(hashed, password)
    except (VerificationError, InvalidHashError):
        return False
