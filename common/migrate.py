"""Plain-SQL schema migrations for the control database.

Files ``common/migrations/NNNN_name.sql`` are applied in order, each in its own transaction
together with its row in ``schema_migrations``, so a file is applied exactly once. A checksum
guards against an applied file being edited afterwards. An advisory lock serialises concurrent
runs (two services starting at once).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import psycopg2.extensions

_FILE_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
MIGRATIONS_DIR = Path(__file__).with_name("migrations")
_LOCK_KEY = 0x5EE1_0001  # advisory lock id, any constant unique to Skein


class MigrationError(RuntimeError):
    """The database's recorded migrations disagree with the files."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def available() -> list[Migration]:
    """Every migration file shipped with this version, in order."""
    found = []
    for entry in MIGRATIONS_DIR.iterdir():
        match = _FILE_NAME.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"duplicate migration versions in {versions}")
    return found


def migrate(conn: psycopg2.extensions.connection) -> list[Migration]:
    """Apply the migrations not yet recorded; return the ones applied now."""
    applied_now: list[Migration] = []
    with conn, conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
    try:
        with conn, conn.cursor() as cur:
            cur.execute(
                """CREATE TABLE IF NOT EXISTS schema_migrations (
                       version integer PRIMARY KEY,
                       name text NOT NULL,
                       checksum text NOT NULL,
                       applied_at timestamptz NOT NULL DEFAULT now())"""
            )
            cur.execute("SELECT version, name, checksum FROM schema_migrations")
            recorded = {row[0]: (row[1], row[2]) for row in cur.fetchall()}
        for migration in available():
            if migration.version in recorded:
                name, checksum = recorded[migration.version]
                if checksum != migration.checksum:
                    raise MigrationError(
                        f"migration {migration.version:04d}_{name} was changed after it was applied"
                    )
                continue
            with conn, conn.cursor() as cur:
                cur.execute(migration.sql)
                cur.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                    (migration.version, migration.name, migration.checksum),
                )
            applied_now.append(migration)
    finally:
        with conn, conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
    return applied_now


def status(conn: psycopg2.extensions.connection) -> list[tuple[int, str, bool]]:
    """(version, name, applied) for every migration file."""
    with conn, conn.cursor() as cur:
        cur.execute("SELECT to_regclass('schema_migrations') IS NOT NULL")
        row = cur.fetchone()
        done: set[int] = set()
        if row and row[0]:
            cur.execute("SELECT version FROM schema_migrations")
            done = {r[0] for r in cur.fetchall()}
    return [(m.version, m.name, m.version in done) for m in available()]
