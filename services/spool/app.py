"""The spool's internal HTTP API (127.0.0.1:8081, bearer token): thin routes over ``queue`` (the
lease protocol) and ``operations`` (operator tools, retention)."""

from __future__ import annotations

import hmac
import logging
import random
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal

import orjson
from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from common import logs
from common import metrics as common_metrics
from common.db import ControlDb
from common.spool_client import BatchRegistration
from services.spool import metrics, operations, queue
from services.spool.objects import BatchObjects
from services.spool.policy import RetryPolicy
from services.spool.settings import SpoolSettings

log = logging.getLogger("skein.spool")
# The control database's integer widths: larger values are 422s, never a database error.
INT4 = 2**31 - 1
INT8 = 2**63 - 1
# Tables in one lease, at most.
MAX_TABLES = 100
# Registrations in one bulk request, at most (the streamery sends one per upload thread).
MAX_BULK = 100
DestinationType = Literal["postgres", "redshift", "bigquery", "snowflake", "iceberg"]


class RegisterIn(BaseModel):
    object_key: str = Field(min_length=1, max_length=2048)
    client_id: int = Field(ge=1, le=INT8)
    table_name: str = Field(min_length=1, max_length=255)
    partition: int = Field(ge=0, le=INT4)
    first_offset: int = Field(ge=0, le=INT8)
    last_offset: int = Field(ge=0, le=INT8)
    record_count: int = Field(ge=0, le=INT4)
    bytes: int = Field(ge=0, le=INT8)
    oldest_received_at: str
    newest_received_at: str
    request_ids: list[str] = Field(default_factory=list, max_length=100_000)

    def registration(self) -> BatchRegistration:
        fields = self.model_dump(include=set(RegisterIn.model_fields))
        fields["request_ids"] = tuple(fields["request_ids"])
        return BatchRegistration(**fields)


def _registration(body: RegisterIn) -> BatchRegistration:
    """A registration to register (single or bulk): its offsets in order, else 422."""
    if body.last_offset < body.first_offset:
        raise HTTPException(422, "last_offset is below first_offset")
    return body.registration()


class RegisterManyIn(BaseModel):
    batches: list[RegisterIn] = Field(min_length=1, max_length=MAX_BULK)


class DeadLetterIn(RegisterIn):
    reason: str = Field(min_length=1, max_length=2000)


def _json(payload: Any) -> Response:
    """The loaders' hot path answers without FastAPI's generic encoder (a measurable share of a
    lease + ack cycle); payloads are plain JSON types already."""
    return Response(orjson.dumps(payload), media_type="application/json")


class LeaseIn(BaseModel):
    destination_type: DestinationType
    owner: str = Field(min_length=1, max_length=200)
    lease_seconds: int = Field(300, ge=1)
    max_batches: int = Field(50, ge=1, le=10_000)
    max_bytes: int = Field(256 * 1024 * 1024, ge=1, le=INT8)
    # Tables of the leased client in one lease (one token, the next ones under ``more``).
    max_tables: int = Field(1, ge=1, le=MAX_TABLES)


class ExtendIn(BaseModel):
    lease_seconds: int = Field(300, ge=1)


class SchemaChange(BaseModel):
    change: Literal["table_created", "column_added", "column_widened", "column_split"]
    warehouse_table: str = Field(max_length=1000)
    column: str | None = Field(None, max_length=1000)
    before: Any = None
    after: Any = None


class Rejection(BaseModel):
    record: str = Field(max_length=2000)
    reason: str = Field(max_length=2000)


class LoadReport(BaseModel):
    """What the load wrote: for the client's ``load.completed`` hooks, its schema log and the
    kept copy of its rejected records (``services/loaders/core/notes.py``)."""

    num_rows: int = Field(ge=0, le=INT8)
    num_rows_rejected: int = Field(0, ge=0, le=INT8)
    destination_table_name: str | None = Field(None, max_length=1000)
    destination_type: str | None = Field(None, max_length=40)
    schema_changes: list[SchemaChange] = Field(default_factory=list, max_length=200)
    rejections: list[Rejection] = Field(default_factory=list, max_length=100)


class TableAck(BaseModel):
    """One table of a lease of several: its batch ids and its load's report."""

    batch_ids: list[Annotated[int, Field(ge=1, le=INT8)]] = Field(min_length=1)
    report: LoadReport | None = None


class AckIn(BaseModel):
    batch_ids: list[Annotated[int, Field(ge=1, le=INT8)]] | None = None
    report: LoadReport | None = None
    # A lease of several tables: each table's ack (instead of ``batch_ids`` and ``report``).
    acks: list[TableAck] | None = Field(None, min_length=1, max_length=MAX_TABLES)
    # Lease the next work in the same round trip (a loader's loop: ack, then lease again).
    next: LeaseIn | None = None


class NackIn(BaseModel):
    kind: Literal["transient", "permanent"]
    error: str = Field(max_length=100_000)
    batch_ids: list[Annotated[int, Field(ge=1, le=INT8)]] | None = None


def _keep_house(
    db: ControlDb, stop: threading.Event, settings: SpoolSettings, objects: BatchObjects | None
) -> None:
    """Expired leases back to pending and late destinations resolved (every interval), and
    loaded batches' objects past retention deleted (every purge interval, if retention is on)."""
    next_purge = time.monotonic()
    while not stop.wait(settings.housekeeping_interval_s):
        try:
            expired, resolved = db.run(queue.housekeeping)
        except Exception as exc:  # the DB may be down for a while: keep trying
            log.warning("housekeeping failed", extra={"err": str(exc)})
            continue
        if expired or resolved:
            log.info("housekeeping", extra={"expired": expired, "resolved": resolved})
        if objects is not None and time.monotonic() >= next_purge:
            next_purge = time.monotonic() + settings.purge_interval_s
            _purge(db, stop, settings.retention_days * 86400, objects)


def _purge(
    db: ControlDb, stop: threading.Event, older_than_s: float, objects: BatchObjects
) -> None:
    purged = 0
    try:
        while not stop.is_set():
            done = db.run(lambda conn: operations.purge_loaded(conn, older_than_s, objects.delete))
            purged += done
            metrics.PURGED.inc(done)
            if done == 0:
                break
    except Exception as exc:  # S3 or the DB unreachable: the next round tries again
        log.warning("purge failed", extra={"err": str(exc), "purged": purged})
        return
    if purged:
        log.info("purged loaded batches' objects", extra={"purged": purged})
    pruned = 0
    try:
        while not stop.is_set():
            done = db.run(lambda conn: operations.prune_idle_tables(conn, older_than_s))
            pruned += done
            if done == 0:
                break
    except Exception as exc:  # the next round tries again
        log.warning("pruning idle tables failed", extra={"err": str(exc), "pruned": pruned})
        return
    if pruned:
        log.info("forgot tables idle past retention", extra={"tables": pruned})
    try:
        db.run(lambda conn: operations.prune_rejections(conn, older_than_s))
    except Exception as exc:  # the next round tries again
        log.warning("pruning kept rejections failed", extra={"err": str(exc)})


def create_app(settings: SpoolSettings | None = None) -> FastAPI:
    settings = settings or SpoolSettings()
    logs.configure()
    db = ControlDb(settings.control_dsn.get_secret_value(), settings.db_pool_size, "skein-spool")
    policy = RetryPolicy(settings.retry_base_s, settings.retry_cap_s, settings.retry_window_s)
    token = settings.spool_token.get_secret_value()

    queue_depth = metrics.QueueCollector(lambda: db.run(operations.stats))

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        stop = threading.Event()
        objects = BatchObjects(settings) if settings.retention_days > 0 else None
        keeper = threading.Thread(
            target=_keep_house, args=(db, stop, settings, objects), daemon=True
        )
        keeper.start()
        yield
        stop.set()
        keeper.join(5)
        db.close()

    def authorized(authorization: Annotated[str | None, Header()] = None) -> None:
        scheme, _, given = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.encode(), token.encode()):
            raise HTTPException(401, "a valid internal bearer token is required")

    app = FastAPI(
        title="Skein spool (internal)",
        version="0.1.0",
        lifespan=lifespan,
        description="Batches waiting to load: registration, leases, acks, operator actions.",
    )
    api = [Depends(authorized)]

    @app.exception_handler(queue.Conflict)
    async def conflict(_r: Request, exc: queue.Conflict) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, 409)

    @app.exception_handler(operations.NotFound)
    async def not_found(_r: Request, exc: operations.NotFound) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, 404)

    @app.exception_handler(queue.Refused)
    async def refused(_r: Request, exc: queue.Refused) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, 422)

    @app.post(
        "/v1/batches",
        dependencies=api,
        responses={
            409: {"description": "out of order"},
            422: {"description": "refused (its client does not exist): dead-letter it"},
        },
    )
    def register(body: RegisterIn, response: Response) -> dict[str, Any]:
        """Register an uploaded batch (idempotent on object_key); advances the high-water mark.
        A new key starting at or below its (partition, client, table) mark is refused (409)."""
        registration = _registration(body)
        done = db.run(lambda conn: queue.register(conn, registration))
        if done.created:
            metrics.REGISTERED.inc()
        response.status_code = 201 if done.created else 200
        return {"batch_id": done.batch_id, "created": done.created}

    @app.post("/v1/batches/bulk", dependencies=api)
    def register_many(body: RegisterManyIn) -> Response:
        """Register several uploaded batches in their order, in one transaction: each answer
        is ``{"batch_id", "created"}`` or, where the single route would answer 409 or 422,
        ``{"error": "conflict" | "refused", "detail"}``, which leaves the others registered.
        A table's batches must be in their cut order, as for the single route."""
        batches = [_registration(item) for item in body.batches]
        done = db.run(lambda conn: queue.register_many(conn, batches))
        answers: list[dict[str, Any]] = []
        for outcome in done:
            if isinstance(outcome, queue.Registered):
                if outcome.created:
                    metrics.REGISTERED.inc()
                answers.append({"batch_id": outcome.batch_id, "created": outcome.created})
            else:
                kind = "conflict" if isinstance(outcome, queue.Conflict) else "refused"
                answers.append({"error": kind, "detail": str(outcome)})
        return _json({"results": answers})

    @app.post("/v1/batches/dead", dependencies=api, status_code=201)
    def dead_letter(body: DeadLetterIn, response: Response) -> dict[str, Any]:
        """Keep a batch the spool refused to register as ``dead``, with the reason (idempotent
        on object_key): the streamery commits past it and consumption goes on."""
        registration = body.registration()
        done = db.run(lambda conn: queue.dead_letter(conn, registration, body.reason))
        if done.created:
            metrics.DEAD.inc()
        response.status_code = 201 if done.created else 200
        return {"batch_id": done.batch_id, "created": done.created, "state": "dead"}

    @app.get("/v1/high-water", dependencies=api)
    def high_water(partition: Annotated[list[int], Query()]) -> dict[str, Any]:
        """Highest registered offset per (partition, client, table) for the given partitions."""
        return {"marks": db.run(lambda conn: queue.high_water(conn, partition))}

    def counted(body: LeaseIn, got: dict[str, Any] | None) -> dict[str, Any] | None:
        if got is not None:
            metrics.LEASES.labels(body.destination_type).inc()
            tables = [got, *got.get("more", ())]
            leased = sum(len(t["batches"]) for t in tables)
            metrics.LEASED_BATCHES.labels(body.destination_type).inc(leased)
        return got

    def take_lease(body: LeaseIn) -> dict[str, Any] | None:
        seconds = min(body.lease_seconds, settings.max_lease_seconds)
        got = db.run(
            lambda conn: queue.lease(
                conn,
                body.destination_type,
                body.owner,
                seconds,
                body.max_batches,
                body.max_bytes,
                settings.max_leases_per_client,
                body.max_tables,
            )
        )
        return counted(body, got)

    @app.post("/v1/leases", dependencies=api, responses={204: {"description": "nothing ready"}})
    def lease(body: LeaseIn) -> Any:
        """Lease the ready head batches of ONE table for a destination type, in load order."""
        got = take_lease(body)
        return Response(status_code=204) if got is None else _json(got)

    @app.post("/v1/leases/{lease_token}/extend", dependencies=api)
    def extend(lease_token: str, body: ExtendIn) -> dict[str, Any]:
        """Push the lease's expiry out (long loads); 409 if the token is stale."""
        seconds = min(body.lease_seconds, settings.max_lease_seconds)
        return {"expires_at": db.run(lambda conn: queue.extend(conn, lease_token, seconds))}

    @app.post("/v1/leases/{lease_token}/ack", dependencies=api)
    def ack(lease_token: str, body: AckIn) -> Response:
        """The lease's batches (all, or those named) are loaded; 409 if the token is stale.
        With ``acks`` (a lease of several tables), each table's batches and report. With
        ``next``, also lease the next work, in the same transaction as the ack."""
        following = body.next
        seconds = min(following.lease_seconds, settings.max_lease_seconds) if following else 0
        if body.acks is not None:
            if body.batch_ids is not None or body.report is not None:
                raise HTTPException(422, "acks replaces batch_ids and report")
            acks = [
                (a.batch_ids, None if a.report is None else a.report.model_dump(exclude_none=True))
                for a in body.acks
            ]
            # Without ``next``: no destination type, nothing leased (the rest is unused).
            lease: tuple[Any, ...] = (None, "", 0, 1, 1, settings.max_leases_per_client, 1)
            if following:
                lease = (
                    following.destination_type,
                    following.owner,
                    seconds,
                    following.max_batches,
                    following.max_bytes,
                    settings.max_leases_per_client,
                    following.max_tables,
                )
            count, got = db.run(lambda conn: queue.acks_and_lease(conn, lease_token, acks, *lease))
            metrics.ACKS.inc(count)
            return _json({"acked": count, "next": counted(following, got) if following else None})
        report = None if body.report is None else body.report.model_dump(exclude_none=True)
        if following is None:
            count = db.run(lambda conn: queue.ack(conn, lease_token, body.batch_ids, report))
            metrics.ACKS.inc(count)
            return _json({"acked": count, "next": None})
        count, got = db.run(
            lambda conn: queue.ack_and_lease(
                conn,
                lease_token,
                body.batch_ids,
                following.destination_type,
                following.owner,
                seconds,
                following.max_batches,
                following.max_bytes,
                settings.max_leases_per_client,
                report,
                following.max_tables,
            )
        )
        metrics.ACKS.inc(count)
        return _json({"acked": count, "next": counted(following, got)})

    @app.post("/v1/leases/{lease_token}/nack", dependencies=api)
    def nack(lease_token: str, body: NackIn) -> dict[str, Any]:
        """The load failed: transient -> retry with back-off; permanent -> dead."""
        count = db.run(
            lambda conn: queue.nack(
                conn,
                lease_token,
                body.kind,
                body.error,
                body.batch_ids,
                policy,
                random.random(),  # noqa: S311 (jitter)
            )
        )
        metrics.NACKS.labels(body.kind).inc(count)
        if body.kind == "permanent":
            metrics.DEAD.inc(count)
        log.warning(
            "load failed",
            extra={
                "lease": lease_token,
                "kind": body.kind,
                "batches": count,
                "err": body.error[:500],
            },
        )
        return {"nacked": count}

    @app.get("/v1/batches", dependencies=api)
    def list_batches(
        state: Annotated[str | None, Query(pattern="^(" + "|".join(queue.STATES) + ")$")] = None,
        client_id: int | None = None,
        destination_type: DestinationType | None = None,
        limit: Annotated[int, Query(ge=1, le=100_000)] = 1000,
    ) -> dict[str, Any]:
        """Batches in load order, filtered."""
        rows = db.run(
            lambda conn: operations.list_batches(
                conn,
                state=state,
                client_id=client_id,
                destination_type=destination_type,
                limit=limit,
            )
        )
        return {"batches": rows}

    @app.get("/v1/batches/{batch_id}", dependencies=api)
    def get_batch(batch_id: int) -> dict[str, Any]:
        return db.run(lambda conn: operations.get_batch(conn, batch_id))

    @app.post("/v1/batches/{batch_id}/retry", dependencies=api)
    def retry(batch_id: int) -> dict[str, Any]:
        """Operator: a dead batch goes back to pending (409 if it is not dead)."""
        return {"retried": db.run(lambda conn: operations.retry(conn, batch_id))}

    @app.post("/v1/batches/retry-dead", dependencies=api)
    def retry_dead() -> dict[str, Any]:
        """Operator: every dead batch goes back to pending."""
        return {"retried": db.run(lambda conn: operations.retry(conn, None))}

    @app.post("/v1/batches/{batch_id}/skip", dependencies=api)
    def skip(batch_id: int) -> dict[str, Any]:
        """Operator: give up on a dead batch so its table's later batches can load."""
        return {"skipped": db.run(lambda conn: operations.skip(conn, batch_id))}

    @app.get("/v1/stats", dependencies=api)
    def stats() -> dict[str, Any]:
        return db.run(operations.stats)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "OK"}

    @app.get("/readyz")
    def readyz() -> Response:
        ok = db.ping()
        return JSONResponse(
            {"status": "OK" if ok else "ERROR", "control_db": ok}, 200 if ok else 503
        )

    @app.get("/metrics")
    def prometheus_metrics() -> Response:
        body = common_metrics.exposition([queue_depth])
        return Response(body, media_type=common_metrics.CONTENT_TYPE)

    return app
