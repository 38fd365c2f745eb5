"""A load generator for the chaos suite and its ledger of acknowledged records.

Each client gets worker threads that send Import API requests through the gate the way a real
client does: a request answered 503 (or 429), or lost to a dropped or refused connection, is sent
again unchanged, after Retry-After or a short back-off, until it gets an answer. Only a 2xx puts
the request's records in the ledger; requests built to be invalid must get their 4xx, and their
records are remembered as poison that must never reach a warehouse.
"""

from __future__ import annotations

import itertools
import random
import string
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx

from support.stack import GATE
from support.tenants import Tenant

KEYS = 400  # per keyed table: small, so keys are updated many times
POISON_ID = 10_000_000  # keyed rows at or above this come only from rejected requests
POISON_NOTE = "poison"
GIVE_UP_S = 300.0  # one request unanswered for this long fails the run

BATCH_SCHEMAS: dict[str, dict[str, Any]] = {
    "accounts": {
        "properties": {
            "id": {"type": "integer"},
            "v": {"type": "integer"},
            "name": {"type": "string"},
            "meta": {"type": "object", "properties": {"n": {"type": "integer"}}},
        }
    },
    "events": {
        "properties": {
            "ev": {"type": "string"},
            "n": {"type": "integer"},
            "note": {"type": "string"},
        }
    },
}
# table -> key names; "accounts"/"events" go through /batch, "orders"/"clicks" through /push.
TABLES: dict[str, list[str]] = {"accounts": ["id"], "events": [], "orders": ["id"], "clicks": []}


@dataclass
class Ledger:
    """What the warehouse must hold once the pipeline has drained, per (client, table)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    # keyed: id -> (sequence, data) of the greatest sequence acknowledged
    keyed: dict[tuple[int, str], dict[int, tuple[int, dict[str, Any]]]] = field(
        default_factory=dict
    )
    # append-only: the multiset of acknowledged records
    appended: dict[tuple[int, str], Counter[tuple[Any, ...]]] = field(default_factory=dict)
    acked_requests: int = 0
    acked_records: int = 0
    rejected_requests: Counter[int] = field(default_factory=Counter)
    rejected_records: int = 0
    retries: Counter[str] = field(default_factory=Counter)

    def ack(self, client_id: int, table: str, records: list[tuple[int, dict[str, Any]]]) -> None:
        with self.lock:
            self.acked_records += len(records)
            if TABLES[table]:
                state = self.keyed.setdefault((client_id, table), {})
                for seq, data in records:
                    held = state.get(data["id"])
                    if held is None or held[0] < seq:
                        state[data["id"]] = (seq, data)
            else:
                bag = self.appended.setdefault((client_id, table), Counter())
                bag.update(append_row(data) for _, data in records)


def append_row(data: dict[str, Any]) -> tuple[Any, ...]:
    """An append-only record as the columns it lands in."""
    return (data["ev"], data["n"], data["note"])


class Rejected(Exception):
    """A request built to be invalid got the 4xx it should."""


class LoadGenerator:
    """Worker threads pushing records for several clients until ``stop`` is set."""

    def __init__(
        self, tenants: list[Tenant], ledger: Ledger, seed: int, records_per_s: float
    ) -> None:
        self.tenants = tenants
        self.ledger = ledger
        self.seed = seed
        self.stop = threading.Event()
        self.failures: list[str] = []
        self.workers_per_client = 2
        self.interval = 150 * len(tenants) * self.workers_per_client / records_per_s
        self._sequence = itertools.count(1_000_000)
        self._seq_lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for t, tenant in enumerate(self.tenants):
            for w in range(self.workers_per_client):
                rng = random.Random(self.seed * 1000 + t * 10 + w)
                thread = threading.Thread(
                    target=self._run, args=(tenant, rng), daemon=True, name=f"load-{t}-{w}"
                )
                thread.start()
                self._threads.append(thread)

    def finish(self) -> None:
        self.stop.set()
        for thread in self._threads:
            thread.join(timeout=GIVE_UP_S + 60)
        assert not any(t.is_alive() for t in self._threads), "load workers did not stop"

    def _sequences(self, n: int) -> list[int]:
        """Unique, increasing sequences (unique per table, so "greatest wins" never ties)."""
        with self._seq_lock:
            return [next(self._sequence) for _ in range(n)]

    def _run(self, tenant: Tenant, rng: random.Random) -> None:
        with httpx.Client(base_url=GATE, timeout=30) as http:
            next_at = time.monotonic()
            while not self.stop.is_set():
                try:
                    self._one_request(http, tenant, rng)
                except Exception as exc:  # a broken contract: stop this worker, fail the run
                    self.failures.append(f"client {tenant.client_id}: {exc!r}")
                    return
                next_at += self.interval * rng.uniform(0.5, 1.5)
                self.stop.wait(max(0.0, next_at - time.monotonic()))

    def _one_request(self, http: httpx.Client, tenant: Tenant, rng: random.Random) -> None:
        poison = rng.random() < 0.03
        kind = rng.choice(["accounts", "events", "push"])
        n = rng.randint(20, 280)
        body: Any
        if kind == "push":
            path, body, acked = self._push(tenant, rng, n, poison)
        else:
            path, body, acked = self._batch(kind, rng, n, poison)
        status = self._send(http, tenant, path, body)
        if poison:
            if status not in (400, 403):
                raise AssertionError(f"an invalid request to {path} was answered {status}")
            with self.ledger.lock:
                self.ledger.rejected_requests[status] += 1
                self.ledger.rejected_records += n
            return
        if status != 202:
            raise AssertionError(f"a valid request to {path} was answered {status}")
        with self.ledger.lock:
            self.ledger.acked_requests += 1
        for table, records in acked.items():
            self.ledger.ack(tenant.client_id, table, records)

    def _batch(
        self, table: str, rng: random.Random, n: int, poison: bool
    ) -> tuple[str, dict[str, Any], dict[str, list[tuple[int, dict[str, Any]]]]]:
        seqs = self._sequences(n)
        records = [(s, make_data(table, s, rng, poison)) for s in seqs]
        if poison:  # one record breaks the schema: the whole request must be refused
            records[rng.randrange(n)][1]["n" if table == "events" else "v"] = "not a number"
        body = {
            "table_name": table,
            "schema": BATCH_SCHEMAS[table],
            "key_names": TABLES[table],
            "messages": [{"action": "upsert", "sequence": s, "data": d} for s, d in records],
        }
        return "/v2/import/batch", body, {table: records}

    def _push(
        self, tenant: Tenant, rng: random.Random, n: int, poison: bool
    ) -> tuple[str, list[dict[str, Any]], dict[str, list[tuple[int, dict[str, Any]]]]]:
        seqs = self._sequences(n)
        acked: dict[str, list[tuple[int, dict[str, Any]]]] = {"orders": [], "clicks": []}
        body = []
        for s in seqs:
            table = rng.choice(["orders", "clicks"])
            data = make_data(table, s, rng, poison)
            acked[table].append((s, data))
            body.append(
                {
                    "client_id": tenant.client_id,
                    "table_name": table,
                    "sequence": s,
                    "action": "upsert",
                    "key_names": TABLES[table],
                    "data": data,
                }
            )
        if poison:  # one record claims another client: the whole request must be refused
            body[rng.randrange(n)]["client_id"] = tenant.client_id + 1_000_000
        return "/v2/import/push", body, acked

    def _send(self, http: httpx.Client, tenant: Tenant, path: str, body: Any) -> int:
        """Send until answered with anything but 503/429; the same request every time."""
        headers = {"Authorization": f"Bearer {tenant.token}"}
        give_up = time.monotonic() + GIVE_UP_S
        pause = 0.25
        while True:
            try:
                r = http.post(path, json=body, headers=headers)
            except httpx.TransportError as exc:  # gate worker killed, gate restarting
                reason = type(exc).__name__
                wait = pause
            else:
                if r.status_code not in (429, 503):
                    if r.status_code >= 500:
                        raise AssertionError(f"{path}: {r.status_code} {r.text[:300]}")
                    return r.status_code
                reason = str(r.status_code)
                assert r.headers.get("retry-after"), f"{r.status_code} without Retry-After"
                assert r.json()["status"] == "ERROR", r.text
                wait = float(r.headers["retry-after"])
            with self.ledger.lock:
                self.ledger.retries[reason] += 1
            if time.monotonic() + wait > give_up:
                raise AssertionError(f"{path}: no answer but {reason} for {GIVE_UP_S:.0f}s")
            time.sleep(wait)
            pause = min(pause * 2, 5.0)


def make_data(table: str, seq: int, rng: random.Random, poison: bool) -> dict[str, Any]:
    word = "".join(rng.choices(string.ascii_letters, k=rng.randint(4, 24)))
    if table in ("accounts", "orders"):
        key = POISON_ID + rng.randrange(KEYS) if poison else rng.randrange(KEYS)
        data: dict[str, Any] = {"id": key, "v": seq, "name": word}
        if table == "accounts":
            data["meta"] = {"n": rng.randrange(1000)}
        return data
    # Append-only: a fifth of the records repeat an earlier one's content under a new sequence,
    # which must land as a second row (only a resent sequence collapses).
    n = rng.randrange(20) if rng.random() < 0.2 else rng.randrange(10**9)
    note = POISON_NOTE if poison else f"{table}-{n}"
    return {"ev": f"{table}-{n}", "n": n, "note": note}
