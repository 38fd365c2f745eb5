"""The spool's internal HTTP API as seen by the streamery and the loaders.

Transport failures and 5xx raise ``SpoolUnavailable`` (retry with back-off: never treat as
success); a 409 raises ``SpoolConflict`` (a stale lease token, an out-of-order registration);
another 4xx ``SpoolRefused`` (401, 403 and 404: ``SpoolHTTPError``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any
from urllib.parse import urlencode

import orjson
import urllib3


class SpoolUnavailable(Exception):
    """The spool could not be reached or failed; nothing can be assumed done."""


class SpoolConflict(Exception):
    """The spool refused the request as inconsistent with its state (HTTP 409)."""


class SpoolRefused(Exception):
    """The spool refused the request for good (another 4xx): retrying cannot help."""


@dataclass(frozen=True)
class BatchRegistration:
    object_key: str
    client_id: int
    table_name: str
    partition: int
    first_offset: int
    last_offset: int
    record_count: int
    bytes: int
    oldest_received_at: str  # RFC 3339
    newest_received_at: str
    request_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class LeasedBatch:
    batch_id: int
    object_key: str
    partition: int
    first_offset: int
    last_offset: int
    record_count: int
    bytes: int
    oldest_received_at: str
    attempts: int


@dataclass(frozen=True)
class Lease:
    lease_token: str
    client_id: int
    table_name: str
    destination_type: str
    expires_at: str
    batches: tuple[LeasedBatch, ...]
    # The client's destination version when leased (microseconds since the epoch of its last
    # change): cached settings older than this are read again.
    destination_version: int | None = None
    # More tables of the same client under the same token (``max_tables`` > 1), each as a lease
    # of its own table: loaded one by one, acknowledged together (``acks_and_lease``).
    more: tuple[Lease, ...] = ()

    @property
    def tables(self) -> tuple[Lease, ...]:
        """This lease's tables, each as a one-table lease (the first is this one, without
        ``more``)."""
        if not self.more:
            return (self,)
        return (replace(self, more=()), *self.more)

    def record_counts(self, batch_ids: list[int]) -> list[int]:
        """The record count of each of these leased batches, in the order given."""
        counts = {b.batch_id: b.record_count for b in self.batches}
        return [counts[i] for i in batch_ids]


@dataclass(frozen=True)
class Answer:
    """A spool response: its status and body."""

    status_code: int
    content: bytes

    def json(self) -> Any:
        return orjson.loads(self.content)

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")


class SpoolHTTPError(Exception):
    """401, 403 or 404: this deployment's own mistake (token, URL), never a verdict on a batch."""


class SpoolClient:
    """The spool's internal API over one urllib3 pool (each call is a few lines of JSON; httpx
    spent ~0.5 ms of CPU on one where urllib3 spends ~0.25 ms, and the loaders and the
    streamery make one or two per batch)."""

    def __init__(self, base_url: str, token: str, timeout: float = 10.0) -> None:
        self._base = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        self._pool = urllib3.PoolManager(
            num_pools=2,
            maxsize=4,
            retries=False,
            timeout=urllib3.Timeout(connect=timeout, read=timeout),
        )

    def close(self) -> None:
        self._pool.clear()

    def __enter__(self) -> SpoolClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # Bodies are dumped by orjson, which writes a dataclass's tuples (``request_ids``) as arrays.
    def _call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
    ) -> Answer:
        url = self._base + path
        if params:
            url += "?" + urlencode(params, doseq=True)
        body = None if json is None else orjson.dumps(json)
        try:
            raw = self._pool.request(method, url, body=body, headers=self._headers, redirect=False)
        except urllib3.exceptions.HTTPError as exc:
            raise SpoolUnavailable(f"{method} {path}: {exc}") from exc
        response = Answer(raw.status, raw.data)
        if response.status_code == 409:
            raise SpoolConflict(response.json().get("detail", response.text))
        if response.status_code >= 500:
            raise SpoolUnavailable(f"{method} {path}: HTTP {response.status_code}")
        if response.status_code in (401, 403, 404):
            # The deployment's own mistakes (token, URL): raised and retried, never taken as a
            # verdict on the batch.
            raise SpoolHTTPError(f"{method} {path}: HTTP {response.status_code}")
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail", response.text)
            except ValueError:
                detail = response.text
            raise SpoolRefused(f"{method} {path}: HTTP {response.status_code}: {detail}")
        return response

    # -- streamery
    def register(self, batch: BatchRegistration) -> dict[str, Any]:
        """Register an uploaded batch; idempotent on ``object_key``. Returns
        ``{"batch_id": int, "created": bool}``."""
        result: dict[str, Any] = self._call("POST", "/v1/batches", json=asdict(batch)).json()
        return result

    def register_many(
        self, batches: list[BatchRegistration]
    ) -> list[dict[str, Any] | SpoolConflict | SpoolRefused]:
        """Register several uploaded batches in one request (in their order, one transaction):
        for each, what ``register`` returns, or the SpoolConflict / SpoolRefused it would raise.
        The whole request failing raises as ``register`` does."""
        body = {"batches": [asdict(b) for b in batches]}
        results = self._call("POST", "/v1/batches/bulk", json=body).json()["results"]
        if len(results) != len(batches):
            raise SpoolUnavailable(f"{len(results)} answers to {len(batches)} registrations")
        out: list[dict[str, Any] | SpoolConflict | SpoolRefused] = []
        for result in results:
            error = result.get("error")
            if error is None:
                out.append(result)
            else:
                out.append(
                    (SpoolConflict if error == "conflict" else SpoolRefused)(result["detail"])
                )
        return out

    def dead_letter(self, batch: BatchRegistration, reason: str) -> dict[str, Any]:
        """Keep a batch the spool refused to register as dead, with the reason."""
        body = {**asdict(batch), "reason": reason}
        result: dict[str, Any] = self._call("POST", "/v1/batches/dead", json=body).json()
        return result

    def high_water(self, partitions: list[int]) -> dict[tuple[int, int, str], int]:
        """(partition, client_id, table_name) -> highest registered offset, for these partitions."""
        response = self._call("GET", "/v1/high-water", params={"partition": partitions})
        return {
            (m["partition"], m["client_id"], m["table_name"]): m["last_offset"]
            for m in response.json()["marks"]
        }

    # -- loaders
    def lease(
        self,
        destination_type: str,
        owner: str,
        *,
        lease_seconds: int = 300,
        max_batches: int = 50,
        max_bytes: int = 256 * 1024 * 1024,
        max_tables: int = 1,
    ) -> Lease | None:
        """Batches of ONE table, in load order (with ``max_tables`` > 1, of up to that many
        tables of one client, the others in ``more``), or None when nothing is ready."""
        request = _lease_request(
            destination_type, owner, lease_seconds, max_batches, max_bytes, max_tables
        )
        response = self._call("POST", "/v1/leases", json=request)
        return None if response.status_code == 204 else _lease(response.json())

    def ack_and_lease(
        self,
        lease_token: str,
        destination_type: str,
        owner: str,
        *,
        lease_seconds: int = 300,
        max_batches: int = 50,
        max_bytes: int = 256 * 1024 * 1024,
        report: dict[str, Any] | None = None,
        max_tables: int = 1,
    ) -> Lease | None:
        """Acknowledge the whole lease and lease the next work in one round trip. ``report``:
        what the load wrote (``num_rows``, ``num_rows_rejected``), for the client's hooks."""
        request = _lease_request(
            destination_type, owner, lease_seconds, max_batches, max_bytes, max_tables
        )
        return self._ack(lease_token, {"batch_ids": None, "next": request, "report": report})

    def acks_and_lease(
        self,
        lease_token: str,
        acks: list[tuple[list[int], dict[str, Any] | None]],
        destination_type: str | None,
        owner: str,
        *,
        lease_seconds: int = 300,
        max_batches: int = 50,
        max_bytes: int = 256 * 1024 * 1024,
        max_tables: int = 1,
    ) -> Lease | None:
        """Acknowledge a lease of several tables table by table (``acks``: each table's batch
        ids and its load's report) and, with ``destination_type``, lease the next work, in one
        round trip."""
        body: dict[str, Any] = {"acks": [{"batch_ids": i, "report": r} for i, r in acks]}
        if destination_type is not None:
            body["next"] = _lease_request(
                destination_type, owner, lease_seconds, max_batches, max_bytes, max_tables
            )
        return self._ack(lease_token, body)

    def _ack(self, lease_token: str, body: dict[str, Any]) -> Lease | None:
        """POST an ack; the next lease it answers with, if any."""
        raw = self._call("POST", f"/v1/leases/{lease_token}/ack", json=body).json()
        return None if raw["next"] is None else _lease(raw["next"])

    def extend(self, lease_token: str, lease_seconds: int = 300) -> str:
        raw = self._call(
            "POST", f"/v1/leases/{lease_token}/extend", json={"lease_seconds": lease_seconds}
        ).json()
        return str(raw["expires_at"])

    def ack(
        self,
        lease_token: str,
        batch_ids: list[int] | None = None,
        report: dict[str, Any] | None = None,
    ) -> int:
        raw = self._call(
            "POST",
            f"/v1/leases/{lease_token}/ack",
            json={"batch_ids": batch_ids, "report": report},
        )
        return int(raw.json()["acked"])

    def nack(
        self, lease_token: str, kind: str, error: str, batch_ids: list[int] | None = None
    ) -> int:
        """``kind``: "transient" (retry with back-off) or "permanent" (park as dead)."""
        raw = self._call(
            "POST",
            f"/v1/leases/{lease_token}/nack",
            json={"kind": kind, "error": error, "batch_ids": batch_ids},
        )
        return int(raw.json()["nacked"])


def _lease_request(
    destination_type: str,
    owner: str,
    lease_seconds: int,
    max_batches: int,
    max_bytes: int,
    max_tables: int = 1,
) -> dict[str, Any]:
    request: dict[str, Any] = {
        "destination_type": destination_type,
        "owner": owner,
        "lease_seconds": lease_seconds,
        "max_batches": max_batches,
        "max_bytes": max_bytes,
    }
    if max_tables > 1:  # a spool from before leases of several tables still understands
        request["max_tables"] = max_tables
    return request


def _lease(raw: dict[str, Any]) -> Lease:
    first = Lease(
        lease_token=raw["lease_token"],
        client_id=raw["client_id"],
        table_name=raw["table_name"],
        destination_type=raw["destination_type"],
        expires_at=raw["expires_at"],
        batches=tuple(LeasedBatch(**b) for b in raw["batches"]),
        destination_version=raw.get("destination_version"),
    )
    more = tuple(
        replace(
            first,
            table_name=m["table_name"],
            batches=tuple(LeasedBatch(**b) for b in m["batches"]),
        )
        for m in raw.get("more") or ()
    )
    return replace(first, more=more) if more else first
