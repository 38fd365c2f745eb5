"""The hooks' delivery worker: sends each outbox event to its hook, signed, retried with
back-off for the retry window, then dead.

**Claim.** Due deliveries (``pending`` past ``next_attempt_at``, or ``sending`` past a dead
sender's ``claimed_until``) are taken with a conditional UPDATE, oldest first, at most
``hook_per_client`` in flight per client: any number of workers (two API workers, two control
instances) share the table without sending one twice at once, and one client's slow or dead
receiver holds up only its own deliveries.

**Request.** ``POST`` of the envelope ``{"id", "type", "created_at", "client_id", "data"}``
with headers ``Skein-Event-Id`` and ``Idempotency-Key`` (the event id: a receiver that sees it
twice, after a lost answer, can drop the second), ``Skein-Event-Type`` and ``Skein-Signature:
t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>." + body under the hook's secret>``. The URL is
checked against the network policy at every attempt and the connection goes to the address the
check vetted (the name kept for ``Host`` and TLS), so a name that re-resolves elsewhere changes
nothing. Redirects are not followed. Any 2xx is delivered; anything else is a failure.

**Retry.** Attempt n failed: next after ``hook_retry_base_s * 2^(n-1)`` (x0.8-1.2 jitter), at
most ``hook_retry_max_s``; once failures outlast ``hook_retry_window_s`` from the event (or
its redelivery) the delivery is ``dead``; ``skein hooks redeliver`` sends it again.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import orjson
from prometheus_client import Counter

from common import control, crypto, netpolicy
from common.db import ControlDb
from services.control.settings import ControlSettings

log = logging.getLogger("skein.control.hooks")

DELIVERIES = Counter(
    "skein_hook_deliveries_total", "Hook delivery attempts, by outcome", ["outcome"]
)
_ERROR_LIMIT = 500


@dataclass(frozen=True)
class Claimed:
    delivery_id: int
    attempts: int
    event_id: str
    event_type: str
    payload: Any
    created_at: datetime
    client_id: int
    hook_id: int
    url: str
    secret: bytes  # sealed


def signature(secret: bytes, timestamp: int, body: bytes) -> str:
    """The ``Skein-Signature`` header's value for ``body`` sent at ``timestamp``."""
    digest = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify(secret: bytes, header: str, body: bytes, *, tolerance_s: float = 300) -> bool:
    """A receiver's check: the signature matches and its time is within ``tolerance_s``."""
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    try:
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs(time.time() - timestamp) > tolerance_s:
        return False
    expected = signature(secret, timestamp, body).split("v1=", 1)[1]
    return hmac.compare_digest(expected, parts.get("v1", ""))


def envelope(claimed: Claimed) -> bytes:
    return orjson.dumps(
        {
            "id": claimed.event_id,
            "type": claimed.event_type,
            "created_at": control.iso(claimed.created_at),
            "client_id": claimed.client_id,
            "data": claimed.payload,
        }
    )


def retry_delay(settings: ControlSettings, attempts: int, jitter: float) -> float:
    """Seconds before the next try after ``attempts`` failed ones (``jitter`` in [0.8, 1.2])."""
    base: float = settings.hook_retry_base_s * 2.0 ** min(max(attempts - 1, 0), 40)
    return min(settings.hook_retry_max_s, base) * jitter


_CLAIM = """
WITH in_flight AS (
    SELECT client_id, count(*) AS n FROM hook_deliveries
    WHERE state = 'sending' AND claimed_until > now() GROUP BY client_id
), due AS (
    SELECT d.delivery_id,
           row_number() OVER (PARTITION BY d.client_id ORDER BY d.next_attempt_at, d.delivery_id)
             + coalesce(f.n, 0) AS place
    FROM (SELECT * FROM hook_deliveries
          WHERE (state = 'pending' AND next_attempt_at <= now())
             OR (state = 'sending' AND claimed_until <= now())
          ORDER BY next_attempt_at LIMIT 1000) d
    LEFT JOIN in_flight f USING (client_id)
)
UPDATE hook_deliveries d
SET state = 'sending', attempts = d.attempts + 1,
    claimed_until = now() + make_interval(secs => %(claim_s)s)
FROM due, hook_events e, hooks h
WHERE d.delivery_id = due.delivery_id AND due.place <= %(per_client)s
  AND e.event_id = d.event_id AND h.hook_id = d.hook_id
  AND ((d.state = 'pending' AND d.next_attempt_at <= now())
       OR (d.state = 'sending' AND d.claimed_until <= now()))
  AND d.delivery_id IN (SELECT delivery_id FROM due WHERE place <= %(per_client)s
                        ORDER BY delivery_id LIMIT %(limit)s)
RETURNING d.delivery_id, d.attempts, e.event_id::text, e.type, e.payload, e.created_at,
          d.client_id, d.hook_id, h.url, h.secret
"""


def claim(conn: control.Connection, limit: int, per_client: int, claim_s: float) -> list[Claimed]:
    with conn, conn.cursor() as cur:
        cur.execute(_CLAIM, {"limit": limit, "per_client": per_client, "claim_s": claim_s})
        rows = cur.fetchall()
    return [
        Claimed(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], bytes(r[9])) for r in rows
    ]


def record(
    conn: control.Connection,
    settings: ControlSettings,
    claimed: Claimed,
    status: int | None,
    error: str | None,
) -> str:
    """Close one attempt: delivered, pending again after back-off, or dead. Returns the state."""
    with conn, conn.cursor() as cur:
        if error is None:
            cur.execute(
                "UPDATE hook_deliveries SET state = 'delivered', delivered_at = now(),"
                " last_status = %s, last_error = NULL, claimed_until = NULL"
                " WHERE delivery_id = %s AND state = 'sending'",
                (status, claimed.delivery_id),
            )
            return "delivered"
        delay = retry_delay(settings, claimed.attempts, random.uniform(0.8, 1.2))  # noqa: S311 (jitter)
        cur.execute(
            "UPDATE hook_deliveries SET"
            " state = CASE WHEN now() + make_interval(secs => %(delay)s)"
            "   > window_from + make_interval(secs => %(window)s) THEN 'dead' ELSE 'pending' END,"
            " next_attempt_at = now() + make_interval(secs => %(delay)s),"
            " last_status = %(status)s, last_error = %(error)s, claimed_until = NULL"
            " WHERE delivery_id = %(id)s AND state = 'sending' RETURNING state",
            {
                "delay": delay,
                "window": settings.hook_retry_window_s,
                "status": status,
                "error": error[:_ERROR_LIMIT],
                "id": claimed.delivery_id,
            },
        )
        row = cur.fetchone()
    return str(row[0]) if row else "gone"


class Sender:
    """One attempt at one delivery: policy check, pinned connection, signed POST."""

    def __init__(
        self, settings: ControlSettings, policy: netpolicy.NetworkPolicy, keys: str
    ) -> None:
        self._settings = settings
        self._policy = policy
        self._keys = keys
        self._http = httpx.Client(timeout=settings.hook_timeout_s, follow_redirects=False)

    def close(self) -> None:
        self._http.close()

    def send(self, claimed: Claimed) -> tuple[int | None, str | None]:
        """(HTTP status or None, error or None when delivered)."""
        parts = urlsplit(claimed.url)
        host = parts.hostname or ""
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            addresses = self._policy.check(host, port, cleartext=parts.scheme == "http")
        except netpolicy.DestinationRefused as exc:
            return None, f"refused by the network policy: {exc}"
        address = addresses[0].split("%", 1)[0]
        literal = f"[{address}]" if ":" in address else address
        pinned = urlunsplit((parts.scheme, f"{literal}:{port}", parts.path or "/", parts.query, ""))
        secret = crypto.decrypt(
            self._keys, claimed.secret, purpose="hook", client_id=claimed.client_id
        )
        body = envelope(claimed)
        headers = {
            "Host": parts.netloc.rsplit("@", 1)[-1],
            "Content-Type": "application/json",
            "User-Agent": "skein-hooks/1",
            "Skein-Event-Id": claimed.event_id,
            "Skein-Event-Type": claimed.event_type,
            "Idempotency-Key": claimed.event_id,
            "Skein-Signature": signature(secret, int(time.time()), body),
        }
        extensions = {"sni_hostname": host} if parts.scheme == "https" else {}
        try:
            with self._http.stream(
                "POST", pinned, content=body, headers=headers, extensions=extensions
            ) as response:
                if 200 <= response.status_code < 300:
                    return response.status_code, None
                head = b""
                for chunk in response.iter_bytes():
                    head += chunk
                    if len(head) >= _ERROR_LIMIT:
                        break
                text = head[:_ERROR_LIMIT].decode("utf-8", "replace")
                return response.status_code, f"HTTP {response.status_code}: {text}".strip()
        except httpx.HTTPError as exc:
            return None, f"{type(exc).__name__}: {exc}"


class DeliveryWorker:
    """Claims as many due deliveries as it has free sender threads (``hook_senders``), every
    ``hook_poll_s`` or at once while work keeps coming, and sends each on its own thread."""

    def __init__(self, settings: ControlSettings, db: ControlDb) -> None:
        self._settings = settings
        self._db = db
        self._stop = threading.Event()
        self._sender = Sender(
            settings, netpolicy.from_settings(settings), settings.secret_key.get_secret_value()
        )
        self._pool = ThreadPoolExecutor(max(1, settings.hook_senders), "hook-sender")
        self._lock = threading.Lock()
        self._busy = 0  # deliveries claimed and not yet recorded
        self._thread = threading.Thread(target=self._run, name="hook-delivery", daemon=True)

    def start(self) -> None:
        if self._settings.hook_senders > 0:
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(self._settings.hook_timeout_s + 5)
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._sender.close()

    def _run(self) -> None:
        s = self._settings
        while not self._stop.is_set():
            with self._lock:
                free = s.hook_senders - self._busy
            got: list[Claimed] = []
            if free > 0:
                try:
                    got = self._db.run(partial(self._claim, limit=free))
                except Exception as exc:  # the control database is down: try again later
                    log.warning("claiming hook deliveries failed", extra={"err": str(exc)})
            for claimed in got:
                with self._lock:
                    self._busy += 1
                self._pool.submit(self._attempt, claimed)
            if len(got) < free or free <= 0:
                self._stop.wait(s.hook_poll_s)

    def _claim(self, conn: control.Connection, *, limit: int) -> list[Claimed]:
        s = self._settings
        return claim(conn, limit, s.hook_per_client, s.hook_timeout_s + 30)

    def _attempt(self, claimed: Claimed) -> None:
        try:
            self._deliver(claimed)
        finally:
            with self._lock:
                self._busy -= 1

    def _deliver(self, claimed: Claimed) -> None:
        try:
            status, error = self._sender.send(claimed)
        except Exception as exc:  # a secret that no longer decrypts, ...
            status, error = None, f"{type(exc).__name__}: {exc}"
        try:
            state = self._db.run(
                partial(
                    record, settings=self._settings, claimed=claimed, status=status, error=error
                )
            )
        except Exception as exc:  # the claim expires and the delivery is tried again
            log.warning("recording a hook delivery failed", extra={"err": str(exc)})
            return
        DELIVERIES.labels("delivered" if error is None else "failed").inc()
        if error is not None:
            log.info(
                "hook delivery failed",
                extra={
                    "client_id": claimed.client_id,
                    "delivery_id": claimed.delivery_id,
                    "attempt": claimed.attempts,
                    "state": state,
                    "err": error,
                },
            )
