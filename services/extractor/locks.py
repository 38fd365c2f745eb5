"""The run lock: one run at a time per integration, across any number of extractors.

Whoever runs an integration holds a session-level advisory lock keyed by its id, on its own
control-DB connection, for the whole run. A crashed extractor's connection closes, which
releases the lock; a ``running`` row whose lock can be taken is therefore a run that died
(``runs.close_dead_runs``).
"""

from __future__ import annotations

from common.control import Connection

_LOCK_BASE = 0x5EE1 << 48  # advisory lock ids of integrations: this + integration_id


def lock_id(integration_id: int) -> int:
    return _LOCK_BASE + integration_id


def try_lock(conn: Connection, integration_id: int) -> bool:
    """Take the integration's run lock on ``conn`` (session level) if nobody holds it."""
    with conn, conn.cursor() as cur:
        cur.execute("SELECT pg_try_advisory_lock(%s)", (lock_id(integration_id),))
        row = cur.fetchone()
    return bool(row and row[0])


def unlock(conn: Connection, integration_id: int) -> None:
    with conn, conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_unlock(%s)", (lock_id(integration_id),))
