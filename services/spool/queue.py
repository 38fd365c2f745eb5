"""The spool's lease protocol over the control database (plain functions, one transaction each).

    register -> pending --lease--> leased --ack--> loaded
                  ^                   |--nack transient--> retry_wait --(due)--> leased ...
                  |                   |--nack permanent / retry window over--> dead
                  +--lease expired----+                                          |
                  +------------------------ operator retry ----------------------+--skip--> skipped

One table loads in Kafka order: a lease holds the consecutive ready batches at the head of ONE
(client, table); a dead or not-yet-due head blocks the rest of that table only. The
``table_leases`` row of a (client, table), locked with ``FOR UPDATE SKIP LOCKED``, serialises
leasers, and a live lease there keeps every other leaser off that table. Here: the streamery's
side (``register``, ``dead_letter``, ``high_water``) and the loaders' (``lease``, ``extend``,
``ack``, ``ack_and_lease``, ``nack``, with ``housekeeping`` returning expired leases). The
operator's edges (retry, skip) and retention live in ``services.spool.operations``.

The hot path runs in SQL functions (one round trip each; a stale token or batches not held come
back as ``{"error": ...}``, raised here as :class:`Conflict`, so nothing is half-applied). Each
is named by its latest definition in ``common/migrations/``:

- ``spool_lease(type, owner, lease_seconds, max_batches, max_bytes, candidates, max_per_client,
  max_tables)``, 0025_lease_client_first (0009's seven-argument form leases one table). Ranks
  the clients with a batch ready for the type (pending or retry_wait, due) and fewer than
  ``max_per_client`` live leases of it (counted as tokens, not tables): by their live leases,
  then their last turn (``client_turns.served_at``), then the oldest data. For each in turn,
  its tables whose head batch is ready and that have no live lease, oldest head first: it
  takes the first whose ``table_leases`` row it can lock (``SKIP LOCKED``), re-counts the cap
  under the client's ``client_turns`` row lock (at the cap: the next client), takes the head
  batches up to the first one not ready, ``max_batches`` or ``max_bytes``, then as many of the
  client's next tables as ``max_tables`` and that budget allow (each under ``more``), marks
  them leased under one new token (``attempts`` + 1) and returns the lease as jsonb, with
  ``destination_version`` (the client's ``destinations.updated_at`` in microseconds, so a
  loader whose cached destination is older reads it again); after ``candidates`` tables tried,
  or none ready, NULL. (0020's ``spool_versioned`` wrappers are no longer called.)
- ``spool_ack(token, batch_ids, report)``, 0021_schema_log (replacing 0018's). Runs the
  two-argument ``spool_ack`` and, with a loader's report, in the same transaction writes its
  schema changes to ``schema_log`` and its kept rejected records to ``rejected_records`` and
  emits the events its client's hooks want (``hook_emit``, 0018): ``load.completed``,
  ``records.rejected`` when rows were rejected, ``schema.changed`` when the schema changed.
- ``spool_ack(token, batch_ids)``, 0006_spool_ack_wakes_retries (replacing 0005's). Locks the
  lease's batches, marks the named ones (all if NULL) loaded, makes the same client's batches of
  that destination type waiting out a transient back-off due now (a load just worked), and
  releases the table's lease once none of its batches is leased. Returns ``{"acked": n}``.
- ``spool_ack_and_lease(token, batch_ids, type, owner, lease_seconds, max_batches, max_bytes,
  candidates, max_per_client, report, max_tables)``, 0025 (0018's form without ``max_tables``
  leases one table). The three-argument ``spool_ack``, then, unless it answered an error,
  ``spool_lease``, in one transaction (the table the ack frees can be leased at once):
  ``{"acked": n, "next": lease}``.
- ``spool_acks_and_lease(token, acks, type, owner, lease_seconds, max_batches, max_bytes,
  candidates, max_per_client, max_tables)``, 0025: a lease of several tables acknowledged
  table by table (each ack the three-argument ``spool_ack`` with its table's batch ids and
  report), then the next lease, in one transaction.
- ``hook_batches_dead(batch_ids)``, 0018_hooks. One ``batch.dead`` hook event per (client,
  table) among those batches now dead, for clients with a live hook; called in the transaction
  that made them dead (``dead_letter``, a permanent or final ``nack``).

- ``spool_register(registration)`` and ``spool_register_many(registrations)``,
  0026_register_in_one_call: ``register`` in one round trip (idempotent on the object key; a
  client that does not exist or a start at or below the stream's mark come back as errors
  before anything is written), and several in their order in one transaction.

``dead_letter``, ``high_water``, ``housekeeping``, ``extend`` and ``nack`` are plain
statements in this file. The functions run on generic plans (``plan_cache_mode``, 0025):
re-planning their statements on every call cost more than running them. (Over 400 lines, the
excess being the list above: the protocol is one state machine, read in one place.)
"""

from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass
from typing import Any

import orjson

from common.control import Connection, iso
from common.spool_client import BatchRegistration
from services.spool.policy import RetryPolicy

OPEN_STATES = ("pending", "leased", "retry_wait", "dead")
STATES = (*OPEN_STATES, "loaded", "skipped")
CANDIDATES = 32
# Live leases one client may hold per destination type (SKEIN_SPOOL_MAX_LEASES_PER_CLIENT).
MAX_LEASES_PER_CLIENT = 2


class Conflict(Exception):
    """The request contradicts the spool's state (stale lease token, out-of-order batch...)."""


class Refused(Exception):
    """The batch cannot be registered at all (its client does not exist): the streamery
    dead-letters it (``dead_letter``) and goes on."""


@dataclass(frozen=True)
class Registered:
    batch_id: int
    created: bool
    destination_type: str | None


# ----------------------------------------------------------------------------- registration


# A registration's columns of ``batches``; ``_batch_values`` gives their values in this order.
_BATCH_COLUMNS = (
    "client_id, table_name, object_key, partition, first_offset, last_offset, record_count,"
    " bytes, oldest_received_at, newest_received_at, request_ids"
)


def _batch_values(batch: BatchRegistration) -> tuple[Any, ...]:
    return (
        batch.client_id,
        batch.table_name,
        batch.object_key,
        batch.partition,
        batch.first_offset,
        batch.last_offset,
        batch.record_count,
        batch.bytes,
        batch.oldest_received_at,
        batch.newest_received_at,
        list(batch.request_ids),
    )


def register(conn: Connection, batch: BatchRegistration) -> Registered:
    """Record an uploaded batch and advance its high-water mark; idempotent on the object key.

    A new key must start above the (partition, client, table) high-water mark: the streamery
    registers a table's batches in Kafka order, so anything else is a re-read duplicate or a bug
    (Conflict). A client that does not exist is Refused. One round trip (``spool_register``).
    """
    answer = _one_call(
        conn,
        "SELECT spool_register(%s::jsonb)::text",
        (orjson.dumps(dataclasses.asdict(batch)).decode(),),
    )
    return _registered(answer)


def register_many(
    conn: Connection, batches: list[BatchRegistration]
) -> list[Registered | Conflict | Refused]:
    """``register`` for each of ``batches``, in their order, in one transaction and one round
    trip (``spool_register_many``): each answer is the batch's registration, or the Conflict or
    Refused it met, which leaves the others as they are."""
    answers = _one_call(
        conn,
        "SELECT spool_register_many(%s::jsonb)::text",
        (orjson.dumps([dataclasses.asdict(b) for b in batches]).decode(),),
    )
    out: list[Registered | Conflict | Refused] = []
    for answer in answers:
        try:
            out.append(_registered(answer))
        except (Conflict, Refused) as exc:
            out.append(exc)
    return out


def _registered(answer: dict[str, Any]) -> Registered:
    error = answer.get("error")
    if error == "refused":
        raise Refused(answer["detail"])
    if error is not None:
        raise Conflict(answer["detail"])
    return Registered(int(answer["batch_id"]), bool(answer["created"]), answer["destination_type"])


def _registered_before(cur: Any, object_key: str) -> Registered | None:
    """The batch already registered (or dead-lettered) under ``object_key``, if any."""
    cur.execute(
        "SELECT batch_id, destination_type FROM batches"
        " WHERE object_key = %s AND replay_of IS NULL",
        (object_key,),
    )
    row = cur.fetchone()
    return None if row is None else Registered(row[0], False, row[1])


def _advance_mark(cur: Any, batch: BatchRegistration) -> None:
    """The (partition, client, table) high-water mark moves up to the batch's last offset."""
    cur.execute(
        """INSERT INTO high_water (partition, client_id, table_name, last_offset)
           VALUES (%s, %s, %s, %s)
           ON CONFLICT (partition, client_id, table_name)
           DO UPDATE SET last_offset = GREATEST(high_water.last_offset, EXCLUDED.last_offset)""",
        (batch.partition, batch.client_id, batch.table_name, batch.last_offset),
    )


def dead_letter(conn: Connection, batch: BatchRegistration, reason: str) -> Registered:
    """Keep a batch that could not be registered as ``dead`` with the reason (its object stays
    in S3; ``skein spool ls --state dead`` shows it); idempotent on the object key. The
    high-water mark advances as for a registration, so a re-read skips these offsets."""
    with conn, conn.cursor() as cur:
        cur.execute(
            f"""INSERT INTO batches ({_BATCH_COLUMNS}, state, last_error, last_error_kind,
                   first_failed_at)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, 'dead', %s, 'permanent', now())
               ON CONFLICT (object_key) WHERE replay_of IS NULL DO NOTHING
               RETURNING batch_id""",  # noqa: S608 (constant column list)
            (*_batch_values(batch), f"refused at registration: {reason}"),
        )
        row = cur.fetchone()
        if row is not None:
            cur.execute("SELECT hook_batches_dead(ARRAY[%s]::bigint[])", (row[0],))  # batch.dead
        if row is None:
            found = _registered_before(cur, batch.object_key)
            assert found is not None
            return Registered(found.batch_id, False, None)
        _advance_mark(cur, batch)
        return Registered(row[0], True, None)


def high_water(conn: Connection, partitions: list[int]) -> list[dict[str, Any]]:
    with conn, conn.cursor() as cur:
        cur.execute(
            """SELECT partition, client_id, table_name, last_offset FROM high_water
               WHERE partition = ANY(%s) ORDER BY partition, client_id, table_name""",
            (partitions,),
        )
        return [
            {"partition": p, "client_id": c, "table_name": t, "last_offset": o}
            for p, c, t, o in cur.fetchall()
        ]


# ----------------------------------------------------------------------------------- leases


def _one_call(conn: Connection, sql: str, params: tuple[Any, ...]) -> Any:
    """One statement returning jsonb as text, in its own implicit transaction (no BEGIN/COMMIT
    round trips around it); parsed with orjson (psycopg2's own jsonb parsing is json.loads)."""
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(sql, params)
            row = cur.fetchone()
            return orjson.loads(row[0]) if row and row[0] is not None else None
    finally:
        if not conn.closed:  # a dead connection would raise here and hide the real error
            conn.autocommit = False


def lease(
    conn: Connection,
    destination_type: str,
    owner: str,
    lease_seconds: int,
    max_batches: int,
    max_bytes: int,
    max_per_client: int = MAX_LEASES_PER_CLIENT,
    max_tables: int = 1,
) -> dict[str, Any] | None:
    """Lease the ready head of one table for ``destination_type`` (with ``max_tables`` > 1,
    of up to that many tables of its client, the others under ``more``, within the same batch
    and byte budget); None when nothing is ready.

    Fair across clients: a client holding ``max_per_client`` live leases of this type gets no
    more; among the rest, tables of clients holding the fewest live leases come first, then
    the client served least recently, then the oldest data. Candidates are found from the
    ready batches, so idle tables cost nothing. One round trip: ``spool_lease`` (migration
    0009) does the work in the server; the ``table_leases`` row, locked with ``FOR UPDATE SKIP
    LOCKED``, serialises leasers of a table, the client's ``client_turns`` row its cap.
    """
    got: dict[str, Any] | None = _one_call(
        conn,
        "SELECT spool_lease(%s, %s, %s, %s, %s, %s, %s, %s)::text",
        (
            destination_type,
            owner,
            lease_seconds,
            max_batches,
            max_bytes,
            CANDIDATES,
            max_per_client,
            max_tables,
        ),
    )
    return got


def housekeeping(conn: Connection) -> tuple[int, int]:
    """Return expired leases' batches to pending; give batches of clients that had no
    destination when they registered the type set since, and waiting batches of a client whose
    destination type changed the new type. The service runs this every second
    (off the lease path, which it would slow down). Returns (expired, resolved) counts."""
    with conn, conn.cursor() as cur:
        cur.execute(
            """UPDATE batches SET state = 'pending', lease_token = NULL, lease_owner = NULL,
                   lease_expires_at = NULL, updated_at = now()
               WHERE state = 'leased' AND lease_expires_at < now()"""
        )
        expired = int(cur.rowcount)
        cur.execute(
            """UPDATE batches b SET destination_type = d.type, updated_at = now()
               FROM destinations d WHERE b.destination_type IS NULL AND d.client_id = b.client_id"""
        )
        resolved = int(cur.rowcount)
        # A destination whose type changed: its waiting batches go to the new type's loaders.
        cur.execute(
            """UPDATE batches b SET destination_type = d.type, updated_at = now()
               FROM destinations d
               WHERE b.state IN ('pending', 'retry_wait') AND d.client_id = b.client_id
                 AND b.destination_type <> d.type"""
        )
        return expired, resolved + int(cur.rowcount)


def _check_token(token: str) -> None:
    try:
        uuid.UUID(token)
    except ValueError as exc:
        raise Conflict("unknown or stale lease token") from exc


def _leased_ids(cur: Any, token: str, batch_ids: list[int] | None) -> list[int]:
    """The lease's batches named by ``batch_ids`` (all if None), locked; Conflict if stale."""
    _check_token(token)
    cur.execute(
        """SELECT batch_id FROM batches WHERE lease_token = %s AND state = 'leased'
           ORDER BY batch_id FOR UPDATE""",
        (token,),
    )
    held = [r[0] for r in cur.fetchall()]
    if not held:
        raise Conflict("unknown or stale lease token")
    if batch_ids is None:
        return held
    missing = sorted(set(batch_ids) - set(held))
    if missing:
        raise Conflict(f"batches {missing} are not held by this lease")
    return sorted(set(batch_ids))


def _release_if_done(cur: Any, token: str) -> None:
    cur.execute(
        "SELECT 1 FROM batches WHERE lease_token = %s AND state = 'leased' LIMIT 1", (token,)
    )
    if cur.fetchone() is None:
        cur.execute(
            """UPDATE table_leases SET lease_token = NULL, lease_owner = NULL, expires_at = NULL
               WHERE lease_token = %s""",
            (token,),
        )


def extend(conn: Connection, token: str, lease_seconds: int) -> str:
    with conn, conn.cursor() as cur:
        ids = _leased_ids(cur, token, None)
        cur.execute(
            """UPDATE batches SET lease_expires_at = now() + make_interval(secs => %s),
                   updated_at = now()
               WHERE batch_id = ANY(%s)""",
            (lease_seconds, ids),
        )
        cur.execute(
            """UPDATE table_leases SET expires_at = now() + make_interval(secs => %s)
               WHERE lease_token = %s RETURNING expires_at""",
            (lease_seconds, token),
        )
        row = cur.fetchone()
        if row is None:
            raise Conflict("unknown or stale lease token")
        return str(iso(row[0]))


def ack(
    conn: Connection, token: str, batch_ids: list[int] | None, report: dict[str, Any] | None = None
) -> int:
    """Mark the lease's batches loaded (all, or those named); one round trip (``spool_ack``).
    With the loader's ``report`` (rows written and rejected), the client's hooks get
    ``load.completed`` (and ``records.rejected``) in the same transaction."""
    _check_token(token)
    done: dict[str, Any] = _one_call(
        conn,
        "SELECT spool_ack(%s::uuid, %s::bigint[], %s::jsonb)::text",
        (token, batch_ids, _report(report)),
    )
    if "error" in done:
        raise Conflict(done["error"])
    return int(done["acked"])


def ack_and_lease(
    conn: Connection,
    token: str,
    batch_ids: list[int] | None,
    destination_type: str,
    owner: str,
    lease_seconds: int,
    max_batches: int,
    max_bytes: int,
    max_per_client: int = MAX_LEASES_PER_CLIENT,
    report: dict[str, Any] | None = None,
    max_tables: int = 1,
) -> tuple[int, dict[str, Any] | None]:
    """A loader's cycle in one round trip (``spool_ack_and_lease``): ack (with the ``report``
    as :func:`ack`), then lease the next work in the same transaction. Returns (acked count,
    next lease or None)."""
    _check_token(token)
    done: dict[str, Any] = _one_call(
        conn,
        "SELECT spool_ack_and_lease(%s::uuid, %s::bigint[], %s, %s, %s,"
        " %s, %s, %s, %s, %s::jsonb, %s)::text",
        (
            token,
            batch_ids,
            destination_type,
            owner,
            lease_seconds,
            max_batches,
            max_bytes,
            CANDIDATES,
            max_per_client,
            _report(report),
            max_tables,
        ),
    )
    if "error" in done:
        raise Conflict(done["error"])
    return int(done["acked"]), done["next"]


def acks_and_lease(
    conn: Connection,
    token: str,
    acks: list[tuple[list[int], dict[str, Any] | None]],
    destination_type: str | None,
    owner: str,
    lease_seconds: int,
    max_batches: int,
    max_bytes: int,
    max_per_client: int = MAX_LEASES_PER_CLIENT,
    max_tables: int = 1,
) -> tuple[int, dict[str, Any] | None]:
    """A lease of several tables acknowledged table by table (``acks``: each table's batch ids
    and its load's report, as :func:`ack` takes them), then, with ``destination_type``, the
    next lease, all in one round trip (``spool_acks_and_lease``). Returns (acked count, next
    lease or None); Conflict if the token is stale (acks before the stale one stand)."""
    _check_token(token)
    body = orjson.dumps([{"batch_ids": ids, "report": report} for ids, report in acks])
    done: dict[str, Any] = _one_call(
        conn,
        "SELECT spool_acks_and_lease(%s::uuid, %s::jsonb, %s, %s, %s, %s, %s, %s, %s, %s)::text",
        (
            token,
            body.decode(),
            destination_type,
            owner,
            lease_seconds,
            max_batches,
            max_bytes,
            CANDIDATES,
            max_per_client,
            max_tables,
        ),
    )
    if "error" in done:
        raise Conflict(done["error"])
    return int(done["acked"]), done["next"]


def _report(report: dict[str, Any] | None) -> str | None:
    return None if report is None else orjson.dumps(report).decode()


def nack(
    conn: Connection,
    token: str,
    kind: str,
    error: str,
    batch_ids: list[int] | None,
    policy: RetryPolicy,
    jitter: float,
) -> int:
    """A failed load: transient -> retry_wait after back-off (dead only once failures outlast
    the retry window); permanent -> dead with the reason. The table's later batches wait."""
    if kind not in ("transient", "permanent"):
        raise ValueError("kind must be 'transient' or 'permanent'")
    error = error[:4000]
    with conn, conn.cursor() as cur:
        ids = _leased_ids(cur, token, batch_ids)
        if kind == "permanent":
            cur.execute(
                """UPDATE batches SET state = 'dead', last_error = %s, last_error_kind = %s,
                       lease_token = NULL, lease_owner = NULL, lease_expires_at = NULL,
                       updated_at = now()
                   WHERE batch_id = ANY(%s)""",
                (error, kind, ids),
            )
        else:
            cur.execute(
                """SELECT max(attempts),
                          extract(epoch FROM now() - min(coalesce(first_failed_at, now())))
                   FROM batches WHERE batch_id = ANY(%s)""",
                (ids,),
            )
            row = cur.fetchone()
            assert row is not None
            attempts, failing_for = int(row[0]), float(row[1])
            if policy.gives_up(failing_for):
                state = "dead"
                error = f"transient failures for longer than the retry window: {error}"
            else:
                state = "retry_wait"
            cur.execute(
                """UPDATE batches SET state = %s, last_error = %s, last_error_kind = %s,
                       first_failed_at = coalesce(first_failed_at, now()),
                       next_attempt_at = now() + make_interval(secs => %s),
                       lease_token = NULL, lease_owner = NULL, lease_expires_at = NULL,
                       updated_at = now()
                   WHERE batch_id = ANY(%s)""",
                (state, error, kind, policy.delay(attempts, jitter), ids),
            )
        if kind == "permanent" or state == "dead":
            cur.execute("SELECT hook_batches_dead(%s::bigint[])", (ids,))  # batch.dead
        _release_if_done(cur, token)
        return len(ids)
