"""Notification hooks: the rules ``skein hooks`` and the HTTP API share.

A hook is a client's URL and the event types it wants (``common.events.EVENT_TYPES``). Its
signing secret is the operator's (``--secret-env``) or generated and shown once; it is stored
sealed (purpose ``hook``) and never read back. A URL must pass the same network policy as a
destination, when it is set and again at each delivery (``services/control/delivery.py``).
Events are written by the facts' own transactions (``common/events.py``); the delivery rows
listed here are what the delivery worker sends, retries and gives up on.
"""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import psycopg2

from common import audit, control, crypto, netpolicy
from common.events import EVENT_TYPES

MAX_HOOKS_PER_CLIENT = 10  # as Stitch's post-load hooks
MIN_SECRET_BYTES = 16
DELIVERY_STATES = ("pending", "sending", "delivered", "dead")
_DELIVERY_COLUMNS = (
    "d.delivery_id, d.hook_id, d.event_id, e.type, d.state, d.attempts, d.next_attempt_at,"
    " d.last_status, d.last_error, d.delivered_at, d.created_at"
)
_DELIVERIES = (
    "SELECT d.delivery_id, d.hook_id, d.event_id, e.type, d.state, d.attempts,"
    " d.next_attempt_at, d.last_status, d.last_error, d.delivered_at, d.created_at"
    " FROM hook_deliveries d JOIN hook_events e USING (event_id)"
)


def check_url(policy: netpolicy.NetworkPolicy, url: str) -> str:
    """A hook URL the policy lets deliveries reach, or :class:`control.ControlError`."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise control.ControlError(f"hook URL {url!r} is not an http(s) URL")
    if parts.username or parts.password:
        raise control.ControlError("a hook URL cannot hold credentials; sign with the secret")
    if len(url) > 2000:
        raise control.ControlError("a hook URL is at most 2,000 characters")
    try:
        policy.check_url(url)
    except netpolicy.DestinationRefused as exc:
        raise control.ControlError(f"hook URL refused by the network policy: {exc}") from None
    return url


def check_events(names: list[str]) -> list[str]:
    wanted = list(dict.fromkeys(n.strip() for n in names if n.strip()))
    if not wanted:
        raise control.ControlError(f"name at least one event: {', '.join(EVENT_TYPES)}")
    unknown = [n for n in wanted if n not in EVENT_TYPES]
    if unknown:
        raise control.ControlError(
            f"unknown event {', '.join(unknown)}; known: {', '.join(EVENT_TYPES)}"
        )
    return wanted


def create_hook(
    conn: control.Connection,
    policy: netpolicy.NetworkPolicy,
    keys: str,
    client_id: int,
    url: str,
    events: list[str],
    secret: str | None = None,
) -> dict[str, Any]:
    """A new hook; a generated ``secret`` is in this answer only (a given one is never echoed)."""
    check_url(policy, url)
    wanted = check_events(events)
    generated = secret is None
    if secret is None:
        secret = "whsec_" + secrets.token_urlsafe(32)
    if len(secret.encode()) < MIN_SECRET_BYTES:
        raise control.ControlError(f"a hook secret is at least {MIN_SECRET_BYTES} bytes")
    sealed = crypto.encrypt(keys, secret.encode(), purpose="hook", client_id=client_id)
    with conn, conn.cursor() as cur:
        cur.execute("SELECT 1 FROM clients WHERE client_id = %s FOR UPDATE", (client_id,))
        if cur.fetchone() is None:
            raise control.NotFound(f"no client {client_id}")
        cur.execute(
            "SELECT count(*) FROM hooks WHERE client_id = %s AND removed_at IS NULL",
            (client_id,),
        )
        if int(cur.fetchone()[0]) >= MAX_HOOKS_PER_CLIENT:  # type: ignore[index]
            raise control.ControlError(
                f"client {client_id} has {MAX_HOOKS_PER_CLIENT} hooks already; remove one first"
            )
        cur.execute(
            "INSERT INTO hooks (client_id, url, events, secret) VALUES (%s, %s, %s, %s)"
            " RETURNING hook_id, created_at",
            (client_id, url, wanted, psycopg2.Binary(sealed)),
        )
        hook_id, created_at = cur.fetchone()  # type: ignore[misc]
        audit.record(
            cur,
            "hook.create",
            client_id=client_id,
            subject=f"hook {hook_id}",
            details={"url": url, "events": wanted, "secret": "generated" if generated else "set"},
        )
    made: dict[str, Any] = {
        "hook_id": hook_id,
        "client_id": client_id,
        "url": url,
        "events": wanted,
        "created_at": control.iso(created_at),
    }
    if generated:
        made["secret"] = secret
    return made


def list_hooks(
    conn: control.Connection,
    client_id: int | None = None,
    *,
    after: int = 0,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """Live hooks (of ``client_id``, when given), never their secrets; a page past ``after``."""
    with conn, conn.cursor() as cur:
        cur.execute(
            "SELECT hook_id, client_id, url, events, created_at FROM hooks"
            " WHERE removed_at IS NULL AND (%s::bigint IS NULL OR client_id = %s)"
            " AND hook_id > %s ORDER BY hook_id LIMIT %s",
            (client_id, client_id, after, limit),
        )
        rows = cur.fetchall()
    return [
        {
            "hook_id": r[0],
            "client_id": r[1],
            "url": r[2],
            "events": list(r[3]),
            "created_at": control.iso(r[4]),
        }
        for r in rows
    ]


def remove_hook(conn: control.Connection, hook_id: int, client_id: int | None = None) -> bool:
    """Remove a hook (of ``client_id``, when given): True if this call removed it. Its
    undelivered events go dead with the reason, so nothing is sent to a removed URL."""
    with conn, conn.cursor() as cur:
        cur.execute(
            "UPDATE hooks SET removed_at = now() WHERE hook_id = %s"
            " AND (%s::bigint IS NULL OR client_id = %s) AND removed_at IS NULL"
            " RETURNING client_id",
            (hook_id, client_id, client_id),
        )
        row = cur.fetchone()
        if row is None:
            cur.execute(
                "SELECT 1 FROM hooks WHERE hook_id = %s AND (%s::bigint IS NULL OR client_id = %s)",
                (hook_id, client_id, client_id),
            )
            if cur.fetchone() is None:
                raise control.NotFound(f"no hook {hook_id}")
            return False
        cur.execute(
            "UPDATE hook_deliveries SET state = 'dead', last_error = 'the hook was removed',"
            " claimed_until = NULL WHERE hook_id = %s AND state IN ('pending', 'sending')",
            (hook_id,),
        )
        audit.record(cur, "hook.remove", client_id=row[0], subject=f"hook {hook_id}")
    return True


def list_deliveries(
    conn: control.Connection,
    client_id: int,
    *,
    state: str | None = None,
    after: int = 0,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """A client's deliveries (in ``state``, when given), oldest first; a page past ``after``."""
    if state is not None and state not in DELIVERY_STATES:
        raise control.ControlError(f"state must be one of {', '.join(DELIVERY_STATES)}")
    with conn, conn.cursor() as cur:
        cur.execute(
            _DELIVERIES + " WHERE d.client_id = %s AND (%s::text IS NULL OR d.state = %s)"
            " AND d.delivery_id > %s ORDER BY d.delivery_id LIMIT %s",
            (client_id, state, state, after, limit),
        )
        rows = cur.fetchall()
    return [_delivery(r) for r in rows]


def _delivery(r: tuple[Any, ...]) -> dict[str, Any]:
    keys = [c.strip().split(".", 1)[1] for c in _DELIVERY_COLUMNS.split(",")]
    out = {
        k: (control.iso(v) if isinstance(v, datetime) else v) for k, v in zip(keys, r, strict=True)
    }
    out["event_id"] = str(out["event_id"])
    out["event_type"] = out.pop("type")
    return out


def redeliver(
    conn: control.Connection, delivery_id: int, client_id: int | None = None
) -> dict[str, Any]:
    """Send a delivered or dead event again (its retry window starts over); 409 while it is
    still being tried."""
    with conn, conn.cursor() as cur:
        cur.execute(
            "SELECT d.state, d.client_id, h.removed_at FROM hook_deliveries d"
            " JOIN hooks h USING (hook_id) WHERE d.delivery_id = %s"
            " AND (%s::bigint IS NULL OR d.client_id = %s) FOR UPDATE OF d",
            (delivery_id, client_id, client_id),
        )
        row = cur.fetchone()
        if row is None:
            raise control.NotFound(f"no delivery {delivery_id}")
        state, owner, removed_at = row
        if removed_at is not None:
            raise control.ControlError(f"delivery {delivery_id}'s hook was removed")
        if state in ("pending", "sending"):
            raise Busy(f"delivery {delivery_id} is {state}: it is being tried already")
        cur.execute(
            "UPDATE hook_deliveries SET state = 'pending', next_attempt_at = now(),"
            " window_from = now(), claimed_until = NULL, delivered_at = NULL"
            " WHERE delivery_id = %s",
            (delivery_id,),
        )
        cur.execute(
            _DELIVERIES + " WHERE d.delivery_id = %s",
            (delivery_id,),
        )
        updated = cur.fetchone()
        audit.record(cur, "hook.redeliver", client_id=owner, subject=f"delivery {delivery_id}")
    assert updated is not None
    return _delivery(updated)


class Busy(control.ControlError):
    """The delivery is still being tried: the API answers 409."""
