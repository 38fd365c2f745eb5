"""`skein spool ...`: what an operator sees and does, through the real CLI on the control DB."""

from __future__ import annotations

import json
import subprocess
import uuid
from contextlib import closing
from typing import Any

from common import db
from common.spool_client import BatchRegistration
from services.control import accounts, destinations
from services.spool import queue
from services.spool.policy import RetryPolicy
from support.stack import ROOT


def skein(*args: str, expect: int = 0) -> dict[str, Any]:
    done = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "skein"), "spool", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == expect, done.stdout + done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def dead_batch() -> tuple[int, int]:
    """A fresh client's batch parked dead (destination type with no loader running here)."""
    with closing(db.connect()) as conn:
        client_id = accounts.create_client(conn, "spool-cli")["client_id"]
        destinations.set_destination(conn, "k", client_id, "bigquery", {"project": "p"}, {})
        table = f"t_{uuid.uuid4().hex[:6]}"
        batch_id = queue.register(
            conn,
            BatchRegistration(
                f"{client_id}/{table}/0/{0:020d}-{9:020d}.jsonl.gz",
                client_id,
                table,
                0,
                0,
                9,
                10,
                100,
                "2026-11-26T10:00:00Z",
                "2026-11-26T10:00:00Z",
            ),
        ).batch_id
        while True:  # lease until we hold our own batch (other tests may have bigquery work)
            got = queue.lease(conn, "bigquery", "cli-test", 60, 1, 10**9)
            assert got is not None
            if got["client_id"] == client_id:
                break
            queue.nack(conn, got["lease_token"], "transient", "not mine", None, RetryPolicy(), 0)
        queue.nack(
            conn, got["lease_token"], "permanent", "schema cannot change", None, RetryPolicy(), 0
        )
    return client_id, batch_id


def test_operator_lists_retries_and_skips_a_dead_batch() -> None:
    client_id, batch_id = dead_batch()
    listed = skein("ls", "--state", "dead", "--client", str(client_id))["batches"]
    assert [(b["batch_id"], b["state"], b["last_error"]) for b in listed] == [
        (batch_id, "dead", "schema cannot change")
    ]
    stats = skein("stats")
    assert any(r["state"] == "dead" and r["destination_type"] == "bigquery" for r in stats["open"])

    assert skein("retry", str(batch_id)) == {"retried": 1}
    assert skein("ls", "--client", str(client_id))["batches"][0]["state"] == "pending"
    refused = skein("skip", str(batch_id), expect=1)
    assert "is pending, not dead" in refused["error"]

    with closing(db.connect()) as conn:
        got = queue.lease(conn, "bigquery", "cli-test", 60, 1, 10**9)
        while got is not None and got["client_id"] != client_id:
            queue.nack(conn, got["lease_token"], "transient", "not mine", None, RetryPolicy(), 0)
            got = queue.lease(conn, "bigquery", "cli-test", 60, 1, 10**9)
        assert got is not None
        queue.nack(conn, got["lease_token"], "permanent", "still broken", None, RetryPolicy(), 0)
    assert skein("skip", str(batch_id)) == {"skipped": 1}
    assert skein("ls", "--client", str(client_id))["batches"][0]["state"] == "skipped"


def test_bad_operator_input_is_a_json_error() -> None:
    assert "give a batch id or --all-dead" in skein("retry", expect=1)["error"]
    assert "unknown state" in skein("ls", "--state", "lost", expect=1)["error"]
    assert "no batch" in skein("skip", "999999999", expect=1)["error"]
