"""Clients' destinations as the lease loop reads them: from the control database, decrypted,
cached ``SKEIN_LOADER_<TYPE>_DESTINATION_CACHE_S``, read again at once when a lease names a
newer destination version than the cached one."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from common import db, destination_config
from services.loaders.core.errors import TransientError
from services.loaders.core.protocol import Destination


class Destinations:
    """Clients' destinations from the control DB, cached briefly."""

    def __init__(self, dsn: str, secret_key: str, ttl: float) -> None:
        # Pooled: a burst of new clients (a cache miss each) must not open a control-database
        # connection per lease.
        self._db = db.ControlDb(dsn, size=2, name="skein-loader-destinations")
        self._secret_key = secret_key
        self._ttl = ttl
        self._cache: dict[int, tuple[float, Destination | None]] = {}
        self._lock = threading.Lock()

    def _fetch(self, client_id: int) -> Callable[[Any], dict[str, Any] | None]:
        def fetch(conn: Any) -> dict[str, Any] | None:
            try:
                return destination_config.get_destination(
                    conn, self._secret_key, client_id, reveal=True
                )
            finally:
                conn.rollback()  # a pooled connection goes back with no transaction open

        return fetch

    def get(self, client_id: int, version: int | None = None) -> Destination | None:
        """The client's destination, from the cache unless it expired or ``version`` (the
        lease's ``destination_version``) says the destination changed since it was read."""
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(client_id)
        if hit and now - hit[0] < self._ttl and (version is None or _version(hit[1]) == version):
            return hit[1]
        try:
            raw = self._db.run(self._fetch(client_id))
        except Exception as exc:
            raise TransientError(f"control database unavailable: {exc}") from exc
        found = (
            None
            if raw is None
            else Destination(
                client_id,
                raw["type"],
                raw["config"],
                raw.get("secrets", {}),
                str(raw.get("updated_at") or ""),
                tuple((g["kind"], g["value"]) for g in raw.get("grants", [])),
            )
        )
        with self._lock:
            self._cache[client_id] = (now, found)
        return found


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _version(destination: Destination | None) -> int | None:
    """A destination's version as leases name it: its last change, microseconds since 1970."""
    if destination is None or not destination.version:
        return None
    changed = datetime.fromisoformat(destination.version)
    return (changed - _EPOCH) // timedelta(microseconds=1)
