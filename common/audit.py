"""The control plane's audit log: who changed what, and when; never a secret value.

Each change of clients, tokens, webhooks, destinations, limits, grants and integrations writes
one ``audit_log`` row in the same transaction as the change (``record``), so a change is
recorded if and only if it happened. The actor comes from the caller's context: the CLI sets
``os:<user>`` once (``set_actor``); a future HTTP API sets its API key's id per request.
Details name what changed (ids, token prefixes, setting names, a destination's non-secret
config); secret values never reach them.
"""

from __future__ import annotations

import getpass
from contextvars import ContextVar
from datetime import datetime
from typing import Any

import orjson
import psycopg2.extensions

Connection = psycopg2.extensions.connection

_actor: ContextVar[str] = ContextVar("skein_audit_actor", default="system")


def set_actor(actor: str) -> None:
    _actor.set(actor)


def current_actor() -> str:
    return _actor.get()


def os_actor() -> str:
    """``os:<login name>`` of the process running the CLI."""
    try:
        return f"os:{getpass.getuser()}"
    except (KeyError, OSError):
        return "os:unknown"


def record(
    cur: Any,
    action: str,
    *,
    client_id: int | None = None,
    subject: str | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    """One row, on the caller's cursor (its transaction)."""
    cur.execute(
        "INSERT INTO audit_log (actor, action, client_id, subject, details)"
        " VALUES (%s, %s, %s, %s, %s::jsonb)",
        (current_actor(), action, client_id, subject, orjson.dumps(details or {}).decode()),
    )


def entries(
    conn: Connection,
    *,
    client_id: int | None = None,
    since: datetime | None = None,
    limit: int = 1000,
) -> list[dict[str, Any]]:
    """Newest first."""
    with conn, conn.cursor() as cur:
        cur.execute(
            """SELECT audit_id, at, actor, action, client_id, subject, details FROM audit_log
               WHERE (%(client)s::bigint IS NULL OR client_id = %(client)s)
                 AND (%(since)s::timestamptz IS NULL OR at >= %(since)s)
               ORDER BY at DESC, audit_id DESC LIMIT %(limit)s""",
            {"client": client_id, "since": since, "limit": limit},
        )
        return [
            {
                "audit_id": r[0],
                "at": r[1].isoformat(),
                "actor": r[2],
                "action": r[3],
                "client_id": r[4],
                "subject": r[5],
                "details": r[6],
            }
            for r in cur.fetchall()
        ]
