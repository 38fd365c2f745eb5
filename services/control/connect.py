"""Stitch Connect v4's read side, in the shapes Stitch documents, from Skein's own records: the
orchestrators that speak it (dagster-stitch polls ``loads`` and ``extractions`` and triggers
``sources/{id}/sync``) work against Skein unchanged.

- a *load* is a table (``stream_name``) of the client as the spool sees it; ``source_name`` is
  the integration whose catalog selects that stream, else ``import_api``;
- an *extraction* is an integration run; ``job_name`` is ``<client>.<source>.<run>``;
  discovery ran when the integration was added (0); a failed run's error says which side
  failed (the tap's exit code, or the built-in target's).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from typing import Any

from services.spool.status import TableStatus

IMPORT_API_SOURCE = "import_api"
_JOB = re.compile(r"(\d{1,18})\.(\d{1,18})\.(\d{1,18})")  # each id within a bigint
_TAP_EXIT = re.compile(r"the tap exited with (-?\d+)")
_SIGNATURE = re.compile(r"[0-9a-f]{64}")
_SQLSTATE = re.compile(r"\[SQLSTATE ([0-9A-Z]{5})\]")


def page(
    data: list[dict[str, Any]], number: int, per_page: int, total: int, base: str
) -> dict[str, Any]:
    """``{data, page, total, links: {next, previous}}`` (links are paths with ``?page=``)."""
    last = max(1, -(-total // per_page))
    return {
        "data": data,
        "page": number,
        "total": total,
        "links": {
            "next": f"{base}?page={number + 1}" if number < last else None,
            "previous": f"{base}?page={number - 1}" if number > 1 else None,
        },
    }


def load(client_id: int, table: TableStatus, source: str | None) -> dict[str, Any]:
    error_state = None
    if table.dead or table.last_error:
        message = table.last_error or "batches of this table could not be loaded"
        found = _SQLSTATE.search(message)
        error_state = {
            "notification_data": {
                "warehouse_message": message,
                "sql_state": found.group(1) if found else None,
                "dead_batches": table.dead,
            }
        }
    return {
        "stitch_client_id": client_id,
        "source_name": source or IMPORT_API_SOURCE,
        "stream_name": table.table_name,
        "last_batch_loaded_at": table.last_loaded_at,
        "error_state": error_state,
    }


def job_name(client_id: int, integration_id: int, run_id: int) -> str:
    return f"{client_id}.{integration_id}.{run_id}"


def parse_job(name: str) -> tuple[int, int, int] | None:
    found = _JOB.fullmatch(name)
    if found is None:
        return None
    client, source, run = (int(g) for g in found.groups())
    return client, source, run


def extraction(client_id: int, run: dict[str, Any]) -> dict[str, Any]:
    """One run in Stitch's extraction shape: exit statuses null while it runs."""
    tap = target = None
    tap_says = target_says = None
    if run["status"] == "succeeded":
        tap = target = 0
    elif run["status"] == "failed":
        error = run.get("error") or "failed"
        exited = _TAP_EXIT.search(error)
        if exited:
            tap, tap_says, target = int(exited.group(1)) or 1, error, 0
        else:
            tap, target, target_says = 0, 1, error
    return {
        "job_name": job_name(client_id, run["integration_id"], run["run_id"]),
        "source_id": run["integration_id"],
        "source_name": run["name"],
        "tap_name": run["tap"],
        "start_time": run["started_at"],
        "completion_time": run["ended_at"],
        "discovery_exit_status": 0,
        "discovery_description": None,
        "tap_exit_status": tap,
        "tap_description": tap_says,
        "target_exit_status": target,
        "target_description": target_says,
    }


def sign(secret: str, job: str, expires: int) -> str:
    """The signature of a short-lived log URL (HMAC of the job and its expiry)."""
    key = hashlib.sha256(b"skein-log-url\0" + secret.encode()).digest()
    return hmac.new(key, f"{job}\0{expires}".encode(), hashlib.sha256).hexdigest()


def signed_log_path(secret: str, job: str, ttl_s: int, now: float | None = None) -> str:
    expires = int((time.time() if now is None else now) + ttl_s)
    return f"/v4/logs/{job}?expires={expires}&signature={sign(secret, job, expires)}"


def valid_signature(secret: str, job: str, expires: int, signature: str) -> bool:
    if expires < time.time() or not _SIGNATURE.fullmatch(signature):
        return False
    return hmac.compare_digest(sign(secret, job, expires).encode(), signature.encode())
