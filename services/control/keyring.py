"""``skein secrets rotate``: every sealed secret re-encrypted under the newest key."""

from __future__ import annotations

from typing import Any

import psycopg2
from psycopg2 import sql

from common import audit, control, crypto


def rotate_secrets(conn: control.Connection, keys: str) -> dict[str, Any]:
    """Re-encrypt every destination secret, integration config and hook signing secret under
    the keyring's newest
    key, in one transaction; values already under it are left alone, so a second run changes
    nothing. Audited (the key id, never a key)."""
    newest = crypto.keyring(keys)[-1].id
    counts = {"destinations": 0, "integrations": 0, "hooks": 0}
    with conn, conn.cursor() as cur:
        for table, column, purpose, key in (
            ("destinations", "secrets", "destination", "client_id"),
            ("integrations", "sealed", "integration", "integration_id"),
            ("hooks", "secret", "hook", "hook_id"),
        ):
            cur.execute(
                sql.SQL(
                    "SELECT client_id, {column}, {id} FROM {table}"
                    " WHERE {column} IS NOT NULL FOR UPDATE"
                ).format(
                    column=sql.Identifier(column),
                    table=sql.Identifier(table),
                    id=sql.Identifier(key),
                )
            )
            for client_id, blob, row_id in cur.fetchall():
                sealed = bytes(blob)
                if crypto.key_id_of(sealed) == newest:
                    continue
                plain = crypto.decrypt(keys, sealed, purpose=purpose, client_id=client_id)
                fresh = crypto.encrypt(keys, plain, purpose=purpose, client_id=client_id)
                cur.execute(
                    sql.SQL("UPDATE {table} SET {column} = %s WHERE {id} = %s").format(
                        table=sql.Identifier(table),
                        column=sql.Identifier(column),
                        id=sql.Identifier(key),
                    ),
                    (psycopg2.Binary(fresh), row_id),
                )
                counts[table] += 1
        done = {"key_id": newest, **counts}
        audit.record(cur, "secrets.rotate", subject=newest, details=done)
    return done
