"""The gate's intake: what every route does with a request, and what it does it with.

:class:`Gate` holds the per-process parts (the Kafka producer, the control-database pool, the
token and schema caches, the quotas) and the steps every route shares: authenticate the token
(its shape first, so a malformed one never reaches a cache or the database), read the body
within limits, admit the client's new tables (its distinct-tables quota), and produce the
records, answering only once Kafka acknowledged every message. :func:`build_gate` wires it from
the settings; the routes (``services.gate.app``) parse, call these and answer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from fastapi import Request

from common import client_limits, tokens
from common import metrics as common_metrics
from common.db import ControlDb
from common.wire import HEADER_FORMAT, RecordTooLarge, TableRecords, encode_messages, message_key
from services.gate import fastlane, metrics
from services.gate.auth import LookupUnavailable, TokenCache
from services.gate.body import (
    Malformed,
    NumberTooLong,
    TooDeep,
    check_content_type,
    parse_json,
    read_limited,
)
from services.gate.compiler import CompileBudget, CompileWorker
from services.gate.errors import ApiError, not_authorized, status_error, unavailable
from services.gate.fastlane import FastBatch
from services.gate.producer import DurableProducer, NotDelivered, OutgoingMessage
from services.gate.quotas import Limited, Quotas, TableAdmission
from services.gate.records import Limits, RequestContext
from services.gate.schemas import SchemaCache
from services.gate.settings import GateSettings

log = logging.getLogger("skein.gate")
T = TypeVar("T")


# Longer than any "Bearer <token>" we issue; a longer header is cut before it is looked at.
_MAX_AUTHORIZATION = 128


@dataclass
class Gate:
    """Everything a request needs, created once per worker process in the app's lifespan."""

    settings: GateSettings
    producer: DurableProducer
    db: ControlDb
    api_tokens: TokenCache[tokens.ApiTokenInfo]
    webhooks: TokenCache[tokens.WebhookInfo]
    schemas: SchemaCache
    quotas: Quotas

    @property
    def limits(self) -> Limits:
        return Limits(self.settings.max_records, self.settings.max_key_length)

    async def client_for(self, authorization: str | None) -> tokens.ApiTokenInfo:
        scheme, _, token = (authorization or "")[:_MAX_AUTHORIZATION].partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not tokens.token_has_shape("api", token):
            raise not_authorized()  # never reaches the cache or the database
        return await self._known(self.api_tokens, token)

    async def webhook_for(self, client_id: int, token: str) -> tokens.WebhookInfo:
        if not tokens.token_has_shape("webhook", token):
            raise not_authorized()
        hook = await self._known(self.webhooks, token)
        if hook.client_id != client_id:
            raise not_authorized()
        return hook

    async def _known(self, cache: TokenCache[T], token: str) -> T:
        try:
            info = await cache.get(token)
        except LookupUnavailable as exc:
            log.warning(
                "token lookup failed: control database unavailable", extra={"err": str(exc)}
            )
            raise unavailable(
                "Authentication is temporarily unavailable", self.settings.retry_after_s
            ) from exc
        if info is None:
            raise not_authorized()
        return info

    async def body(self, request: Request, *, malformed: Callable[[str], ApiError]) -> Any:
        return self.parse(await self.read(request), request, malformed=malformed)

    async def read(self, request: Request) -> bytes:
        """The body's bytes (inflated), within the limits; its size kept for the byte quota."""
        check_content_type(request.headers.get("content-type"))
        raw = await read_limited(
            request.stream(),
            request.headers.get("content-length"),
            request.headers.get("content-encoding"),
            self.settings.max_body_bytes,
        )
        request.state.raw_bytes = len(raw)
        request.state.may_have_reserved = True  # until ``parse`` looks
        return raw

    def parse(self, raw: bytes, request: Request, *, malformed: Callable[[str], ApiError]) -> Any:
        """The body parsed strictly (``body.parse_json``); 400 in ``malformed``'s words."""
        if not raw.strip():
            raise malformed("The request body is empty")
        try:
            parsed = parse_json(raw, self.settings.max_depth)
        except (TooDeep, NumberTooLong) as exc:
            raise malformed(str(exc)) from exc
        except Malformed as exc:
            raise malformed("Malformed json in the body!") from exc
        # A reserved name may also be spelt with escapes ("\u005fsdc_row"): any escape sends the
        # request down the per-record check.
        # (A lone backslash is found by memchr; most bodies have none.)
        request.state.may_have_reserved = b'"_sdc' in raw or (b"\\" in raw and b"\\u" in raw)
        return parsed

    async def accept(
        self, client: Limited, tables: list[TableRecords], request: Request, endpoint: str
    ) -> None:
        """The client's new tables admitted (its distinct-tables quota), then produced."""
        try:
            await self.quotas.admit_tables(client, [t.header.table_name for t in tables])
        except ControlUnavailable as exc:
            raise unavailable(
                "New tables cannot be admitted now; retry the request", self.settings.retry_after_s
            ) from exc
        await self.produce(tables, request, endpoint)

    async def produce(self, tables: list[TableRecords], request: Request, endpoint: str) -> None:
        """Return only when Kafka acknowledged every record; else 503 with Retry-After."""
        request_id: str = request.state.request_id
        messages: list[OutgoingMessage] = []
        headers: list[tuple[str, str | bytes | None]] = [
            ("request_id", request_id.encode()),
            ("format", HEADER_FORMAT),
        ]
        # One record may fill a message up to the topic's limit, less room for Kafka's framing.
        record_limit = self.settings.kafka_message_limit_bytes - 64 * 1024
        try:
            for table in tables:
                key = message_key(table.header.client_id, table.header.table_name)
                for value in encode_messages(table, self.settings.message_max_bytes, record_limit):
                    messages.append(OutgoingMessage(key, value, headers))
        except RecordTooLarge as exc:
            raise status_error(413, f"Request rejected: {exc}") from exc
        remaining = self.settings.request_timeout_s - (time.monotonic() - request.state.started)
        started = time.monotonic()
        try:
            await self.producer.send(messages, timeout=max(0.05, remaining))
        except NotDelivered as exc:
            metrics.PRODUCE_FAILURES.inc()
            log.warning(
                "records not acknowledged by Kafka",
                extra={"request_id": request_id, "err": str(exc)},
            )
            raise unavailable(
                "The records could not be made durable; retry the request",
                self.settings.retry_after_s,
            ) from exc
        metrics.PRODUCE_SECONDS.observe(time.monotonic() - started)
        if tables:  # one client per request
            client = common_metrics.client_label(tables[0].header.client_id)
            metrics.RECORDS.labels(endpoint, client).inc(sum(len(t.lines) for t in tables))
            metrics.BYTES.labels(endpoint, client).inc(sum(len(m.value) for m in messages))

    def fast_batch(self, raw: bytes) -> FastBatch | None:
        """The native lane's reading of a /batch body, where it decides it (``fastlane``)."""
        if not self.settings.native_batch:
            return None
        return fastlane.decide(
            raw, self.limits, self.settings.max_depth, self.settings.max_schema_bytes
        )

    def context(self, request: Request, client_id: int) -> RequestContext:
        return RequestContext(
            client_id=client_id,
            received_at=datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z"),
            request_id=request.state.request_id,
            may_have_reserved=request.state.may_have_reserved,
        )


def build_gate(settings: GateSettings) -> Gate:
    producer = DurableProducer(
        {
            **settings.kafka_config(),
            "compression.type": settings.compression,
            "linger.ms": settings.linger_ms,
            "message.max.bytes": settings.kafka_message_limit_bytes,
            # Give up just after the request deadline; idempotence keeps retries duplicate-free.
            "message.timeout.ms": int(settings.request_timeout_s * 1000) + 1000,
            "client.id": "skein-gate",
            "logger": logging.getLogger("skein.gate.kafka"),
        },
        settings.topic,
    )
    db = ControlDb(settings.control_dsn.get_secret_value(), name="skein-gate")

    def lookup(fn: Callable[[Any, str], T]) -> Callable[[str], Awaitable[T]]:
        async def run(token: str) -> T:
            return await asyncio.to_thread(db.run, lambda conn: fn(conn, token))

        return run

    return Gate(
        settings=settings,
        producer=producer,
        db=db,
        api_tokens=TokenCache(
            lookup(tokens.lookup_api_token), settings.token_ttl_s, settings.token_grace_s
        ),
        webhooks=TokenCache(
            lookup(tokens.lookup_webhook), settings.token_ttl_s, settings.token_grace_s
        ),
        schemas=SchemaCache(
            settings.schema_cache_size,
            settings.max_schema_bytes,
            CompileWorker(
                settings.schema_compile_timeout_s, settings.schema_compile_memory_bytes
            ).compile,
            CompileBudget(settings.schema_compile_budget_s, settings.schema_compile_failures),
            max_bytes=settings.schema_cache_bytes,
            client_bytes=settings.schema_cache_client_bytes,
        ),
        quotas=Quotas(settings, admit_tables(db)),
    )


class ControlUnavailable(Exception):
    """The control database could not be asked (a new table cannot be admitted)."""


def admit_tables(db: ControlDb) -> TableAdmission:
    async def admit(client_id: int, names: list[str], limit: int) -> list[str]:
        try:
            return await asyncio.to_thread(
                db.run, lambda conn: client_limits.admit_tables(conn, client_id, names, limit)
            )
        except Exception as exc:
            raise ControlUnavailable(str(exc)) from exc

    return admit
