"""The floor of the control-plane data every service shares: the connection type, the errors a
control-plane request raises, and the one timestamp format of its answers.

What the services share on top of it has one module each: ``common.tokens`` (API and webhook
tokens: issued, hashed, looked up, revoked), ``common.destination_config`` (the rules a
destination must satisfy, the platform grants, the read with its secrets) and
``common.client_limits`` (a client's quotas as stored, the distinct-tables admission). What only
the control plane does, creating clients, webhooks and destinations, lives in
``services/control/``.

Plain functions over a psycopg2 connection the caller owns; each function is one transaction.
"""

from __future__ import annotations

from datetime import datetime

import psycopg2.extensions

Connection = psycopg2.extensions.connection


class ControlError(ValueError):
    """A control-plane request that cannot be carried out: bad name, unknown id, ..."""


class NotFound(ControlError):
    """What was named does not exist (or is not the caller's): the API answers 404."""


def iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()
