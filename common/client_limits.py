"""A client's quotas as the control database stores them, and the distinct-tables admission.

Each quota is a column of ``clients`` (NULL: the gate's default); the token lookups
(``common.tokens``) read them with the token, and the gate enforces them
(``services/gate/quotas.py``). The distinct-tables quota alone needs the database at request
time: :func:`admit_tables` records a client's new tables in ``client_tables`` (migration 0011).
"""

from __future__ import annotations

from psycopg2 import sql

from common.control import Connection

# A client's own quotas (NULL: the gate's default), in the order the lookups return them.
LIMITS = ("rate_limit_rps", "bytes_per_s", "max_concurrent_requests", "max_tables")
LIMIT_COLUMNS = sql.SQL(", ").join(sql.Identifier("c", name) for name in LIMITS)

# Advisory-lock namespace of the distinct-tables quota (two-key form: namespace, client).
_TABLES_LOCK = 0x5E1_7AB


def admit_tables(conn: Connection, client_id: int, names: list[str], limit: int) -> list[str]:
    """Record a client's new tables if all of them fit under ``limit`` distinct tables; return
    the names refused (all the new ones when they do not all fit, else none). Serialised per
    client, so concurrent gate processes cannot both take the last places."""
    with conn, conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(%s, %s)", (_TABLES_LOCK, client_id % 2**31))
        cur.execute(
            "SELECT table_name FROM client_tables WHERE client_id = %s AND table_name = ANY(%s)",
            (client_id, names),
        )
        known = {row[0] for row in cur.fetchall()}
        new = [n for n in names if n not in known]
        if not new:
            return []
        cur.execute("SELECT count(*) FROM client_tables WHERE client_id = %s", (client_id,))
        held = int(cur.fetchone()[0])  # type: ignore[index]
        if held + len(new) > limit:
            return new
        cur.executemany(
            "INSERT INTO client_tables (client_id, table_name) VALUES (%s, %s)"
            " ON CONFLICT DO NOTHING",
            [(client_id, n) for n in new],
        )
        return []
