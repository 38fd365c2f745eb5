"""Latency of the control API's list endpoints over a fleet-sized control database, on its own
database and service process.

    .venv/bin/python bench/control_bench.py [--clients 1000] [--tables 20] [--batches 100000]
                                            [--requests 300] [--concurrency 4] [--keep]
                                            [--console-requests 100] [--prometheus-url URL]

1. A separate database on the stack's Postgres cluster (``--database``, dropped and recreated;
   never the stack's own, whose loaders would try to load the seeded batches), migrated and
   seeded with bulk SQL the way the spool leaves it: ``--clients`` clients with a destination,
   ``--tables`` tables each (``client_tables``, ``table_leases``, ``high_water`` rows) and
   ``--batches`` batches spread over them with a long tail (every table has at least one; a few
   tables hold thousands), mostly loaded, each table's open batches at its end (pending, some
   leased, waiting for a retry, or pending behind a dead one), API tokens, webhooks and API
   keys per client, and ``--integrations`` clients with an integration and ``--runs`` hourly
   runs of it.
2. ``python -m services.control`` on free ports against it (SKEIN_CONTROL_WORKERS=2).
3. After a warm-up, every endpoint of ``LIST_ENDPOINTS`` the app has (its ``/openapi.json``
   paths; if that document fails to build, each endpoint asked once), so endpoints added later
   are timed once listed there. A random client per request, requests of all endpoints
   interleaved in a shuffled order: sequentially on one connection, then from
   ``--concurrency`` threads at once.

Prints p50 / p99 / max per endpoint against the target (p99 <= 50 ms, sequential), with
``GET /healthz`` (no key, no database) as the baseline: what the HTTP round trip alone costs.
The operator's unpaged ``/v1/status`` over every table is timed too, with fewer requests.

4. Then the web console's pages on the same database and process (``console_bench.py``, which
   also runs alone): an operator's and a client user's, each page's p50 / p99 / max against
   its target (p99 <= 150 ms, issue 19), and the overview's Prometheus part cached and not.

Over 400 lines on purpose: one script, read top to bottom: most of it is the bulk SQL that
seeds a fleet-sized database the way the spool leaves it, which only this benchmark needs; its
measuring part is short, and the helpers it shares with tests live in ``support/``.
"""

from __future__ import annotations

import argparse
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg2
import psycopg2.extensions
from psycopg2 import sql

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # support/ (not installed)
from common import migrate as migrations
from common.settings import SharedSettings
from services.control import keys
from support.processes import stop_process
from support.stack import ROOT, healthy

TARGET_P99_MS = 50.0
PARTITIONS = 12  # the local stack's records topic
# Each client's tables: these names, then the same with a suffix (_1, _2, ...).
TABLE_NAMES = [
    "orders", "customers", "order_items", "products", "payments", "refunds", "invoices",
    "subscriptions", "events", "page_views", "sessions", "signups", "carts", "shipments",
    "inventory", "campaigns", "emails", "tickets", "reviews", "coupons",
]  # fmt: skip
# Destination types by client_id % 10, as a fleet mostly on Postgres might be.
DESTINATION_TYPES = ["postgres"] * 7 + ["redshift", "bigquery", "snowflake"]
STREAMS_SELECTED = 5  # an integration's catalog has every table name, these first selected


def integration_name(client_id: int) -> str:
    """The name the seed gives a client's integration (the SQL spells it the same)."""
    return f"c{client_id}-postgres"


@dataclass(frozen=True)
class Sample:
    """The random values one request's path is built from."""

    client_id: int  # a seeded client (one with an integration, for ``integrated`` endpoints)
    after: int  # a random client id to page from
    batch_after: int  # a random batch id to page from

    @property
    def name(self) -> str:
        return integration_name(self.client_id)


@dataclass(frozen=True)
class ListEndpoint:
    """A list endpoint to time once the app has ``template``; ``template`` and ``query`` are
    formatted with a ``Sample`` (``{client_id}``, ``{after}``, ``{batch_after}``, ``{name}``)."""

    template: str
    query: str = ""
    label: str = ""
    integrated: bool = False  # ask for clients that have an integration
    # An endpoint too slow to ask --requests times: at most this many, and never concurrently.
    max_requests: int | None = None

    @property
    def name(self) -> str:
        query = self.query.replace("{after}", "<random>").replace("{batch_after}", "<random>")
        return self.label or "GET " + self.template + (f"?{query}" if query else "")

    def path(self, sample: Sample) -> str:
        query = self.query.format_map(vars(sample) | {"name": sample.name})
        path = self.template.format_map(vars(sample) | {"name": sample.name})
        return path + (f"?{query}" if query else "")


LIST_ENDPOINTS = [
    ListEndpoint("/v1/clients", "limit=100&after={after}"),
    ListEndpoint("/v1/clients/{client_id}/tokens"),
    ListEndpoint("/v1/clients/{client_id}/webhooks"),
    ListEndpoint("/v1/status", "client_id={client_id}"),
    ListEndpoint("/v1/keys"),
    ListEndpoint("/v1/batches", "client_id={client_id}"),
    ListEndpoint("/v1/batches", "limit=100&after={batch_after}"),
    ListEndpoint("/v1/batches", "state=dead"),
    ListEndpoint("/v1/clients/{client_id}/integrations", integrated=True),
    ListEndpoint("/v1/clients/{client_id}/integrations/{name}/runs", integrated=True),
    ListEndpoint("/v4/{client_id}/loads"),
    ListEndpoint("/v4/{client_id}/extractions", integrated=True),
    # The operator's view of every table of every client: one unpaged answer.
    ListEndpoint("/v1/status", label="GET /v1/status (every client)", max_requests=30),
]
BASELINE = ListEndpoint("/healthz", label="GET /healthz (baseline: no key, no database)")


# --- the bench database -------------------------------------------------------------------------


def dsn_for(base: str, dbname: str) -> str:
    """``base`` (the stack's control DSN: its host, user and password) naming ``dbname``."""
    params = psycopg2.extensions.parse_dsn(base)
    params["dbname"] = dbname
    return str(psycopg2.extensions.make_dsn(**params))


def recreate(admin_dsn: str, name: str, *, drop_only: bool = False) -> None:
    with closing(psycopg2.connect(admin_dsn)) as admin:
        admin.autocommit = True
        with admin.cursor() as cur:
            cur.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
            if not drop_only:
                cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


@dataclass(frozen=True)
class Fleet:
    clients: int
    tables: int
    batches: int
    tokens: int
    webhooks: int
    keys: int
    integrations: int  # clients with an integration (one each)
    runs: int  # runs per integration, one an hour back from now


def seed(conn: psycopg2.extensions.connection, fleet: Fleet, seed_value: float) -> None:
    """Every row in one transaction, generated in the database (no row crosses the wire)."""
    p = {
        "clients": fleet.clients,
        "tables": fleet.tables,
        "batches": fleet.batches,
        "tokens": fleet.tokens,
        "webhooks": fleet.webhooks,
        "keys": fleet.keys,
        "step": max(1, fleet.clients // max(1, fleet.integrations)),
        "integrations": fleet.integrations,
        "runs": fleet.runs,
        "selected": STREAMS_SELECTED,
        "tables_total": fleet.clients * fleet.tables,
        "names": TABLE_NAMES,
        "types": DESTINATION_TYPES,
        "partitions": PARTITIONS,
        "seed": seed_value,
    }
    with conn, conn.cursor() as cur:
        cur.execute(
            """INSERT INTO clients (name, created_at, rate_limit_rps, bytes_per_s, max_tables)
               SELECT 'bench client ' || g,
                      now() - make_interval(hours => 6 * (%(clients)s - g) + 24),
                      CASE WHEN g %% 10 = 0 THEN 200 END,
                      CASE WHEN g %% 25 = 0 THEN 50000000 END,
                      CASE WHEN g %% 50 = 0 THEN 100 END
               FROM generate_series(1, %(clients)s) g""",
            p,
        )
        cur.execute(
            """INSERT INTO destinations (client_id, type, config, updated_at)
               SELECT client_id, (%(types)s::text[])[1 + client_id %% 10],
                      jsonb_build_object(
                          'schema', 'client_' || client_id,
                          'dsn_params', jsonb_build_object(
                              'host', 'warehouse-' || client_id || '.example.com',
                              'dbname', 'analytics', 'user', 'skein')),
                      created_at + interval '1 hour'
               FROM clients""",
            p,
        )
        # (client, table) pairs numbered 0.. (ti), each in the partition its key hashes to.
        cur.execute(
            """CREATE TEMP TABLE seed_tables ON COMMIT DROP AS
               SELECT ti, client_id, destination_type, table_name,
                      abs(hashtext(client_id || '/' || table_name)) %% %(partitions)s AS partition
               FROM (
                   SELECT (row_number() OVER (ORDER BY c.client_id, t) - 1)::int AS ti,
                          c.client_id, d.type AS destination_type,
                          CASE WHEN t < cardinality(v.names) THEN v.names[t + 1]
                               ELSE v.names[1 + t %% cardinality(v.names)] || '_'
                                    || t / cardinality(v.names) END AS table_name
                   FROM clients c
                   JOIN destinations d USING (client_id)
                   CROSS JOIN generate_series(0, %(tables)s - 1) t
                   CROSS JOIN (SELECT %(names)s::text[] AS names) v
               ) numbered""",
            p,
        )
        cur.execute("CREATE UNIQUE INDEX ON seed_tables (ti)")
        # Batches: one per table first, the rest on a long tail (r^3, the tables shuffled by a
        # multiplication modulo their count); pos is a batch's place in its table's Kafka order.
        # Open batches are at a table's end (a table loads in order): by ti %% 200, 10%% of
        # tables have 1-3 pending (the first of them leased in 3%%), 0.5%% a dead batch with
        # up to 2 pending behind it, 3%% a last batch waiting out a transient failure, 0.5%% a
        # skipped first batch.
        cur.execute("SELECT setseed(%(seed)s)", p)
        cur.execute(
            """CREATE TEMP TABLE seed_batches ON COMMIT DROP AS
               WITH pick AS (
                   SELECT g, CASE WHEN g < %(tables_total)s THEN g
                                  ELSE (floor(%(tables_total)s * power(random(), 3))::bigint
                                        * 1000003) %% %(tables_total)s END AS ti
                   FROM generate_series(0, %(batches)s - 1) g
               ), placed AS (
                   SELECT g, ti::int AS ti,
                          (row_number() OVER (PARTITION BY ti ORDER BY g) - 1)::int AS pos,
                          (count(*) OVER (PARTITION BY ti))::int AS n
                   FROM pick
               ), shaped AS (
                   SELECT g, ti, pos, n, n - 1 - pos AS from_end, ti %% 200 AS kind,
                          1 + ti %% 3 AS tail
                   FROM placed
               )
               SELECT g, ti, pos, from_end,
                      CASE
                          WHEN kind < 20 AND from_end < tail THEN
                              CASE WHEN kind < 6 AND from_end = least(tail, n) - 1
                                   THEN 'leased' ELSE 'pending' END
                          WHEN kind = 20 AND from_end = least(2, n - 1) THEN 'dead'
                          WHEN kind = 20 AND from_end < least(2, n - 1) THEN 'pending'
                          WHEN kind BETWEEN 21 AND 26 AND from_end = 0 THEN 'retry_wait'
                          WHEN kind = 27 AND pos = 0 AND n > 1 THEN 'skipped'
                          ELSE 'loaded'
                      END AS state
               FROM shaped""",
            p,
        )
        # A batch every 5 minutes back from the table's newest; loaded ones 20-60 s after they
        # were received, purged 7 days after they loaded (the retention).
        cur.execute(
            """INSERT INTO batches (client_id, destination_type, table_name, object_key,
                   partition, first_offset, last_offset, record_count, bytes,
                   oldest_received_at, newest_received_at, request_ids, state, attempts,
                   lease_owner, lease_token, lease_expires_at, next_attempt_at,
                   first_failed_at, last_error, last_error_kind, created_at, updated_at,
                   loaded_at, purged_at)
               SELECT t.client_id, t.destination_type, t.table_name,
                      t.client_id || '/' || t.table_name || '/' || t.partition || '/'
                          || lpad((b.pos * 1000)::text, 20, '0') || '-'
                          || lpad((b.pos * 1000 + x.records - 1)::text, 20, '0') || '.jsonl.gz',
                      t.partition, b.pos * 1000, b.pos * 1000 + x.records - 1, x.records,
                      x.records * 310, x.received, x.received + interval '4 s',
                      ARRAY['req-' || md5(b.g::text)], b.state,
                      CASE b.state WHEN 'pending' THEN 0 WHEN 'dead' THEN 3
                                   WHEN 'retry_wait' THEN 2 ELSE 1 END,
                      CASE WHEN b.state = 'leased' THEN 'loader-' || t.destination_type || '-1' END,
                      CASE WHEN b.state = 'leased' THEN md5('lease/' || b.ti)::uuid END,
                      CASE WHEN b.state = 'leased' THEN now() + interval '5 min' END,
                      CASE WHEN b.state = 'retry_wait' THEN now() + interval '2 min'
                           ELSE x.received + interval '5 s' END,
                      CASE WHEN b.state IN ('dead', 'retry_wait')
                           THEN x.received + interval '30 s' END,
                      CASE b.state
                          WHEN 'dead' THEN 'permanent: column "amount" is numeric, the record '
                                           'holds text'
                          WHEN 'retry_wait' THEN 'transient: could not connect to server: '
                                                 'Connection refused' END,
                      CASE b.state WHEN 'dead' THEN 'permanent'
                                   WHEN 'retry_wait' THEN 'transient' END,
                      x.received + interval '5 s',
                      coalesce(x.loaded_at, x.received + interval '5 s'),
                      x.loaded_at,
                      CASE WHEN x.loaded_at < now() - interval '7 days'
                           THEN x.loaded_at + interval '7 days' END
               FROM seed_batches b
               JOIN seed_tables t USING (ti)
               CROSS JOIN LATERAL (
                   SELECT 100 + (b.g * 37) %% 900 AS records,
                          now() - make_interval(secs => b.from_end * 300 + b.ti %% 90
                              + CASE WHEN b.state IN ('loaded', 'skipped') THEN 120 ELSE 5 END)
                              AS received
               ) r
               CROSS JOIN LATERAL (
                   SELECT r.records, r.received,
                          CASE WHEN b.state = 'loaded'
                               THEN r.received + make_interval(secs => 20 + b.ti %% 40)
                          END AS loaded_at
               ) x""",
            p,
        )
        cur.execute(
            """INSERT INTO high_water (partition, client_id, table_name, last_offset)
               SELECT partition, client_id, table_name, max(last_offset) FROM batches
               GROUP BY partition, client_id, table_name"""
        )
        cur.execute(
            """INSERT INTO client_tables (client_id, table_name, first_seen)
               SELECT client_id, table_name, min(oldest_received_at) FROM batches
               GROUP BY client_id, table_name"""
        )
        cur.execute(
            """INSERT INTO table_leases (client_id, table_name, lease_token, lease_owner,
                   expires_at, destination_type)
               SELECT t.client_id, t.table_name, l.lease_token, l.lease_owner,
                      l.lease_expires_at, t.destination_type
               FROM seed_tables t
               LEFT JOIN batches l ON l.client_id = t.client_id AND l.table_name = t.table_name
                                  AND l.state = 'leased'"""
        )
        cur.execute(
            """INSERT INTO client_turns (client_id, destination_type, served_at)
               SELECT client_id, type, now() - make_interval(secs => client_id %% 600)
               FROM destinations""",
            p,
        )
        # Tokens, webhooks and client keys: the first token of a client with several revoked.
        cur.execute(
            """INSERT INTO api_tokens (client_id, token_hash, token_prefix, created_at, revoked_at)
               SELECT c.client_id,
                      sha256(convert_to('bench api token ' || c.client_id || '/' || k, 'UTF8')),
                      'skn_' || substr(md5(c.client_id || '/' || k), 1, 4),
                      c.created_at + make_interval(days => k),
                      CASE WHEN k = 0 AND %(tokens)s > 1
                           THEN c.created_at + interval '1 day' END
               FROM clients c CROSS JOIN generate_series(0, %(tokens)s - 1) k
               ORDER BY k, c.client_id""",
            p,
        )
        cur.execute(
            """INSERT INTO webhooks (client_id, token_hash, token_prefix, table_name, key_field,
                   created_at)
               SELECT c.client_id,
                      sha256(convert_to('bench webhook ' || c.client_id || '/' || k, 'UTF8')),
                      'whk_' || substr(md5('w' || c.client_id || '/' || k), 1, 4),
                      (%(names)s::text[])[1 + k %% cardinality(%(names)s::text[])],
                      CASE WHEN k %% 2 = 0 THEN 'id' END,
                      c.created_at + make_interval(days => k)
               FROM clients c CROSS JOIN generate_series(0, %(webhooks)s - 1) k
               ORDER BY k, c.client_id""",
            p,
        )
        cur.execute(
            """INSERT INTO api_keys (client_id, name, key_hash, key_prefix, created_at)
               SELECT c.client_id, 'client ' || c.client_id || ' key ' || k,
                      sha256(convert_to('bench key ' || c.client_id || '/' || k, 'UTF8')),
                      'skc_' || substr(md5('k' || c.client_id || '/' || k), 1, 4),
                      c.created_at + interval '2 hours'
               FROM clients c CROSS JOIN generate_series(0, %(keys)s - 1) k
               ORDER BY k, c.client_id""",
            p,
        )
        cur.execute(
            """INSERT INTO api_keys (name, key_hash, key_prefix, created_at, revoked_at)
               VALUES ('ops (revoked)', sha256('bench operator key 1'), 'sko_aaaa',
                       now() - interval '90 days', now() - interval '30 days'),
                      ('ops', sha256('bench operator key 2'), 'sko_bbbb',
                       now() - interval '30 days', NULL)"""
        )
        # Integrations (every step-th client, one each) with an hourly schedule and a history of
        # runs, newest first in run_id order reversed; ``sealed`` stands in for the encrypted
        # config (no list decrypts it).
        cur.execute(
            """INSERT INTO integrations (client_id, name, tap_package, tap_version,
                   tap_executable, sealed, config_keys, secret_keys, token_id, catalog, schedule,
                   paused, state, state_saved_at, next_run_at, consecutive_failures,
                   last_success_at, created_at, updated_at)
               SELECT c.client_id, 'c' || c.client_id || '-postgres', 'meltanolabs-tap-postgres',
                      '0.1.0', 'tap-postgres',
                      sha256(convert_to('sealed ' || c.client_id, 'UTF8'))
                          || sha256(convert_to('config ' || c.client_id, 'UTF8')),
                      ARRAY['database', 'host', 'password', 'port', 'user'], ARRAY['password'],
                      (SELECT max(token_id) FROM api_tokens t
                       WHERE t.client_id = c.client_id AND t.revoked_at IS NULL),
                      jsonb_build_object('streams', (
                          SELECT jsonb_agg(jsonb_build_object(
                              'tap_stream_id', n, 'stream', n, 'table_name', n,
                              'schema', jsonb_build_object('type', 'object', 'properties',
                                  (SELECT jsonb_object_agg('column_' || col,
                                              jsonb_build_object('type', ARRAY['null', 'string']))
                                   FROM generate_series(1, 12) col)
                                  || jsonb_build_object('id', jsonb_build_object('type', 'integer'),
                                      'updated_at', jsonb_build_object(
                                          'type', 'string', 'format', 'date-time'))),
                              'metadata', jsonb_build_array(jsonb_build_object(
                                  'breadcrumb', '[]'::jsonb,
                                  'metadata', jsonb_build_object(
                                      'selected', ord <= %(selected)s,
                                      'replication-method', 'INCREMENTAL',
                                      'replication-key', 'updated_at',
                                      'table-key-properties', jsonb_build_array('id'))))))
                          FROM unnest(%(names)s::text[]) WITH ORDINALITY AS s (n, ord))),
                      '0 * * * *', c.client_id %% 20 = 0,
                      jsonb_build_object('bookmarks', jsonb_build_object('orders',
                          jsonb_build_object('replication_key_value', now()::text))),
                      now() - interval '10 min', date_trunc('hour', now()) + interval '1 hour',
                      CASE WHEN c.client_id %% 15 = 0 THEN 2 ELSE 0 END,
                      date_trunc('hour', now()), c.created_at + interval '3 hours', now()
               FROM clients c
               WHERE c.client_id %% %(step)s = 0
               ORDER BY c.client_id
               LIMIT %(integrations)s""",
            p,
        )
        cur.execute(
            """INSERT INTO integration_runs (integration_id, trigger, status, owner, started_at,
                   ended_at, records, states_saved, error, stderr)
               SELECT i.integration_id,
                      CASE WHEN k %% 50 = 7 THEN 'manual' ELSE 'schedule' END,
                      x.status, 'extractor-1:' || (1000 + k %% 7), x.started,
                      CASE WHEN x.status <> 'running'
                           THEN x.started + make_interval(secs => 30 + (k * 13) %% 300) END,
                      jsonb_build_object('orders', 10 * k, 'customers', k, 'order_items', 30 * k),
                      3,
                      CASE WHEN x.status = 'failed' THEN 'the tap exited with 1: connection to '
                           'server at "db.example.com" failed: timeout expired' END,
                      repeat('time=2026-01-01 INFO tap_postgres Syncing stream orders ('
                             || k || ' of ' || %(runs)s || ')' || chr(10), 12)
               FROM integrations i
               CROSS JOIN generate_series(0, %(runs)s - 1) k
               CROSS JOIN LATERAL (
                   SELECT date_trunc('hour', now()) - make_interval(hours => k)
                              + interval '5 s' AS started,
                          CASE WHEN k = 0 AND i.integration_id %% 4 = 0 THEN 'running'
                               WHEN (i.integration_id + k) %% 17 = 0 THEN 'failed'
                               ELSE 'succeeded' END AS status
               ) x
               ORDER BY k DESC, i.integration_id""",
            p,
        )
        # What the audit log holds after creating all that (nothing lists it yet).
        cur.execute(
            """INSERT INTO audit_log (at, actor, action, client_id, subject)
               SELECT created_at, 'os:bench', 'client.create', client_id, 'client ' || client_id
               FROM clients
               UNION ALL
               SELECT created_at, 'os:bench', 'token.create', client_id, 'token ' || token_id
               FROM api_tokens
               UNION ALL
               SELECT created_at, 'os:bench', 'webhook.create', client_id,
                      'webhook ' || webhook_id
               FROM webhooks"""
        )


def vacuum_analyze(dsn: str) -> None:
    """As autovacuum leaves a long-lived database: statistics and the visibility map."""
    with closing(psycopg2.connect(dsn)) as conn:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("VACUUM ANALYZE")


def seeded_counts(conn: psycopg2.extensions.connection) -> dict[str, int]:
    with conn, conn.cursor() as cur:
        counts: dict[str, int] = {}
        for table in (
            "clients",
            "client_tables",
            "table_leases",
            "high_water",
            "api_tokens",
            "webhooks",
            "api_keys",
            "integrations",
            "integration_runs",
        ):
            cur.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table)))
            counts[table] = int(cur.fetchone()[0])  # type: ignore[index]
        cur.execute("SELECT state, count(*) FROM batches GROUP BY state ORDER BY count(*) DESC")
        for state, n in cur.fetchall():
            counts[f"batches:{state}"] = int(n)
        cur.execute(
            "SELECT max(n) FROM"
            " (SELECT count(*) AS n FROM batches GROUP BY client_id, table_name) per_table"
        )
        counts["largest_table"] = int(cur.fetchone()[0])  # type: ignore[index]
    return counts


@dataclass(frozen=True)
class Population:
    """What requests pick from: the seeded ids."""

    clients: list[int]
    integrated: list[int]  # clients with an integration
    last_batch: int

    def sample(self, rng: random.Random, integrated: bool) -> Sample:
        return Sample(
            rng.choice(self.integrated if integrated and self.integrated else self.clients),
            rng.randint(0, self.clients[-1]),
            rng.randint(0, self.last_batch),
        )


def population(conn: psycopg2.extensions.connection) -> Population:
    with conn, conn.cursor() as cur:
        cur.execute("SELECT client_id FROM clients ORDER BY client_id")
        clients = [int(r[0]) for r in cur.fetchall()]
        cur.execute("SELECT client_id FROM integrations ORDER BY client_id")
        integrated = [int(r[0]) for r in cur.fetchall()]
        cur.execute("SELECT max(batch_id) FROM batches")
        last = int(cur.fetchone()[0])  # type: ignore[index]
    return Population(clients, integrated, last)


# --- the service --------------------------------------------------------------------------------


def free_ports(count: int) -> list[int]:
    """Ports free now (held open together, so distinct)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for s in sockets:
            s.close()


@contextmanager
def control_service(
    dsn: str, workers: int, prometheus_url: str = "http://127.0.0.1:9090"
) -> Iterator[str]:
    """``python -m services.control`` on the bench database; its URL. Only this bench's
    settings reach it (no env file, no other SKEIN_* variable); the console's overview asks
    ``prometheus_url``."""
    api_port, metrics_port = free_ports(2)
    with tempfile.TemporaryDirectory(prefix="skein-control-bench-") as scratch:
        log_path = Path(scratch) / "service.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("SKEIN_")} | {
            "SKEIN_ENV_FILE": "",
            "SKEIN_CONTROL_DSN": dsn,
            "SKEIN_CONTROL_HOST": "127.0.0.1",
            "SKEIN_CONTROL_PORT": str(api_port),
            "SKEIN_CONTROL_METRICS_PORT": str(metrics_port),
            "SKEIN_CONTROL_WORKERS": str(workers),
            "SKEIN_CONTROL_METRICS_DIR": str(Path(scratch) / "metrics"),
            "SKEIN_CONTROL_PROMETHEUS_URL": prometheus_url,
        }
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "services.control"],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            url = f"http://127.0.0.1:{api_port}"
            deadline = time.monotonic() + 60
            while True:
                if process.poll() is not None or time.monotonic() > deadline:
                    tail = log_path.read_text(errors="replace")[-3000:]
                    raise SystemExit(f"the control service did not come up:\n{tail}")
                if healthy(f"{url}/healthz"):
                    break
                time.sleep(0.2)
            yield url
        finally:
            stop_process(process, 30)


# --- timing -------------------------------------------------------------------------------------


@dataclass
class Samples:
    ms: list[float] = field(default_factory=list)
    errors: int = 0
    bytes: int = 0
    first_error: str = ""

    def add(self, elapsed_ms: float, response: httpx.Response | httpx.TransportError) -> None:
        self.ms.append(elapsed_ms)
        if isinstance(response, httpx.TransportError):
            self.failed(f"{type(response).__name__}: {response}")
            return
        self.bytes += len(response.content)
        if response.status_code != 200:
            self.failed(f"{response.status_code} {response.text[:200]}")

    def failed(self, what: str) -> None:
        self.errors += 1
        self.first_error = self.first_error or what


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] if ordered else float("nan")


def schedule(
    endpoints: list[ListEndpoint], requests: int, ids: Population, rng: random.Random
) -> list[tuple[ListEndpoint, str]]:
    """Every endpoint's requests (random clients), interleaved in a shuffled order so that
    whatever else the machine does falls on all of them alike."""
    plan = [
        (e, e.path(ids.sample(rng, e.integrated)))
        for e in endpoints
        for _ in range(min(requests, e.max_requests or requests))
    ]
    rng.shuffle(plan)
    return plan


def run_plan(
    url: str, key: str, plan: list[tuple[ListEndpoint, str]], threads: int
) -> tuple[dict[str, Samples], float]:
    """The plan's requests from ``threads`` threads, each on its own connection; the samples
    per endpoint and the wall time."""
    results: dict[str, Samples] = {e.name: Samples() for e, _ in plan}
    lock = threading.Lock()

    def work(part: list[tuple[ListEndpoint, str]]) -> None:
        headers = {"Authorization": f"Bearer {key}"}
        http = httpx.Client(base_url=url, headers=headers, timeout=60)
        try:
            for endpoint, path in part:
                began = time.perf_counter()
                try:
                    response: httpx.Response | httpx.TransportError = http.get(path)
                except httpx.TransportError as e:
                    response = e
                elapsed = (time.perf_counter() - began) * 1000
                with lock:
                    results[endpoint.name].add(elapsed, response)
                if isinstance(response, httpx.TransportError) or response.status_code >= 500:
                    # uvicorn closes the connection after an unhandled error: a new one, so
                    # the next request (another endpoint's) does not fail on the dead one
                    http.close()
                    http = httpx.Client(base_url=url, headers=headers, timeout=60)
        finally:
            http.close()

    workers = [threading.Thread(target=work, args=(plan[i::threads],)) for i in range(threads)]
    began = time.monotonic()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return results, time.monotonic() - began


def print_table(results: dict[str, Samples], order: list[ListEndpoint], verdicts: bool) -> None:
    width = max(len(e.name) for e in order)
    print(f"  {'endpoint':<{width}}  requests  p50 ms  p99 ms  max ms  KB/answer  result")
    for e in order:
        s = results[e.name]
        if not s.ms:
            continue
        p99 = percentile(s.ms, 99)
        verdict = ""
        if s.errors:
            verdict = f"ERROR x{s.errors}: {s.first_error}"
        elif verdicts and e is not BASELINE:
            verdict = "PASS" if p99 <= TARGET_P99_MS else "FAIL"
        print(
            f"  {e.name:<{width}}  {len(s.ms):>8}  {percentile(s.ms, 50):>6.1f}  {p99:>6.1f}"
            f"  {max(s.ms):>6.1f}  {s.bytes / len(s.ms) / 1024:>9.1f}  {verdict}"
        )


def routed(response: httpx.Response) -> bool:
    """Whether the app has a GET route for the path asked (its 404 for an unknown route says
    "Not Found"; one for an unknown resource names it)."""
    if response.status_code not in (404, 405):
        return True
    try:
        message = response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return True
    return message not in ("Not Found", "Method Not Allowed")


def present_endpoints(
    url: str, key: str, ids: Population
) -> tuple[list[ListEndpoint], list[str] | None]:
    """The ``LIST_ENDPOINTS`` the app has, from its OpenAPI document, and its other GET paths.
    Without a document (it fails to build), by asking each endpoint once; other paths unknown."""
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=url, headers=headers, timeout=60) as http:
        answer = http.get("/openapi.json")
        if answer.status_code == 200:
            paths = answer.json()["paths"]
            present = [e for e in LIST_ENDPOINTS if "get" in paths.get(e.template, {})]
            timed = {e.template for e in (BASELINE, *present)}
            return present, sorted(p for p, ops in paths.items() if "get" in ops and p not in timed)
        print(
            f"note: /openapi.json answered {answer.status_code}; "
            "the list endpoints were found by asking each once"
        )
        rng = random.Random(0)
        present = []
        for e in LIST_ENDPOINTS:
            try:
                if routed(http.get(e.path(ids.sample(rng, True)))):
                    present.append(e)
            except httpx.TransportError:
                present.append(e)  # a route that failed badly: timed, its errors shown
        return present, None


def measure(url: str, key: str, ids: Population, args: argparse.Namespace) -> None:
    present, others = present_endpoints(url, key, ids)
    endpoints = [BASELINE, *present]
    rng = random.Random(args.seed)

    run_plan(url, key, schedule(endpoints, args.warmup, ids, rng), 1)
    results, _ = run_plan(url, key, schedule(endpoints, args.requests, ids, rng), 1)
    print(
        f"sequential, one connection ({args.requests} requests per endpoint after "
        f"{args.warmup} warm-up, interleaved; target p99 <= {TARGET_P99_MS:g} ms):"
    )
    print_table(results, endpoints, verdicts=True)
    judged = [results[e.name] for e in present]
    passed = sum(1 for s in judged if not s.errors and percentile(s.ms, 99) <= TARGET_P99_MS)
    print(f"  {passed}/{len(judged)} list endpoints within the target")

    if args.concurrency > 1:
        # Without the slow ones: a second-long answer would hold up everything queued behind it.
        light = [e for e in endpoints if e.max_requests is None]
        plan = schedule(light, args.requests, ids, rng)
        results, wall = run_plan(url, key, plan, args.concurrency)
        slow = ", ".join(e.name for e in endpoints if e not in light)
        print(
            f"{args.concurrency} connections at once (every endpoint but {slow}; "
            f"{len(plan) / wall:,.0f} requests/s in all):"
        )
        print_table(results, light, verdicts=False)
    if others is not None:
        print("GET paths not timed (not in LIST_ENDPOINTS): " + (", ".join(others) or "none"))


# --- main ---------------------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    """This bench's flags (``console_bench`` adds its own to them)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--tables", type=int, default=20, help="tables per client")
    parser.add_argument("--batches", type=int, default=100_000, help="batches in all")
    parser.add_argument("--tokens", type=int, default=3, help="API tokens per client")
    parser.add_argument("--webhooks", type=int, default=2, help="webhooks per client")
    parser.add_argument("--keys", type=int, default=1, help="control API keys per client")
    parser.add_argument("--integrations", type=int, default=200, help="clients with one")
    parser.add_argument("--runs", type=int, default=200, help="runs per integration (hourly)")
    parser.add_argument("--requests", type=int, default=300, help="timed requests per endpoint")
    parser.add_argument("--warmup", type=int, default=20, help="untimed requests per endpoint")
    parser.add_argument("--concurrency", type=int, default=4, help="second pass; 1: none")
    parser.add_argument("--workers", type=int, default=2, help="SKEIN_CONTROL_WORKERS")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--database", default="skein_control_bench")
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    parser.add_argument(
        "--prometheus-url",
        default=os.environ.get("SKEIN_CONTROL_PROMETHEUS_URL", "http://127.0.0.1:9090"),
        help="the console overview's Prometheus (SKEIN_CONTROL_PROMETHEUS_URL): the stack's",
    )
    return parser


@dataclass(frozen=True)
class BenchDatabase:
    dsn: str
    key: str  # an operator's control API key
    ids: Population


@contextmanager
def bench_database(
    parser: argparse.ArgumentParser, args: argparse.Namespace
) -> Iterator[BenchDatabase]:
    """The seeded bench database (what it holds printed), dropped afterwards unless --keep."""
    fleet = Fleet(
        args.clients,
        args.tables,
        args.batches,
        args.tokens,
        args.webhooks,
        args.keys,
        args.integrations,
        args.runs,
    )
    if fleet.batches < fleet.clients * fleet.tables:
        parser.error("--batches must be at least --clients x --tables (one batch per table)")

    base = SharedSettings().control_dsn.get_secret_value()  # the stack's: .run/skein.env
    stack_db = psycopg2.extensions.parse_dsn(base).get("dbname")
    if args.database in (stack_db, "postgres", "template0", "template1"):
        parser.error(f"--database {args.database} is not a scratch database")
    admin_dsn = dsn_for(base, "postgres")
    dsn = dsn_for(base, args.database)

    recreate(admin_dsn, args.database)
    try:
        began = time.monotonic()
        with closing(psycopg2.connect(dsn)) as conn:
            migrations.migrate(conn)
            seed(conn, fleet, (args.seed % 1000) / 1000)
        vacuum_analyze(dsn)
        seconds = time.monotonic() - began
        with closing(psycopg2.connect(dsn)) as conn:
            key = str(keys.create(conn, None, "bench")["key"])
            counts = seeded_counts(conn)
            ids = population(conn)
            with conn, conn.cursor() as cur:
                cur.execute("SHOW server_version")
                version = cur.fetchone()[0]  # type: ignore[index]
        states = ", ".join(
            f"{n:,} {k.split(':')[1]}" for k, n in counts.items() if k.startswith("batches:")
        )
        print(f"database {args.database} on PostgreSQL {version}, migrated and seeded in", end="")
        print(f" {seconds:.1f}s (with VACUUM ANALYZE):")
        print(
            f"  {counts['clients']:,} clients x {args.tables} tables = "
            f"{counts['table_leases']:,} tables (client_tables {counts['client_tables']:,}, "
            f"high_water {counts['high_water']:,})"
        )
        print(
            f"  {sum(n for k, n in counts.items() if k.startswith('batches:')):,} batches: "
            f"{states}; largest table {counts['largest_table']:,} batches"
        )
        print(
            f"  {counts['api_tokens']:,} API tokens, {counts['webhooks']:,} webhooks, "
            f"{counts['api_keys']:,} API keys, {counts['integrations']:,} integrations with "
            f"{counts['integration_runs']:,} runs"
        )
        yield BenchDatabase(dsn, key, ids)
    finally:
        if args.keep:
            print(f"kept database {args.database}")
        else:
            recreate(admin_dsn, args.database, drop_only=True)


def load_average() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def main() -> None:
    # imported here: console_bench imports this module (its seeding, service and timing)
    import console_bench

    arguments = parser()
    console_bench.add_arguments(arguments)
    args = arguments.parse_args()
    with (
        bench_database(arguments, args) as db,
        control_service(db.dsn, args.workers, args.prometheus_url) as url,
    ):
        # Two shared cores: what else runs moves these figures.
        print(f"control service: {url}, {args.workers} workers; load average {load_average()}")
        measure(url, db.key, db.ids, args)
        if args.console_requests > 0:
            console_bench.measure_console(url, db.dsn, args)
        print(f"load average at the end: {load_average()} (1/5/15 min)")


if __name__ == "__main__":
    main()
