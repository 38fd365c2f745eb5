"""A segment's set-based merge in Postgres: per table of the segment, the winning row of each
key (greatest sequence, then the latest row) merged into the table from its staging table, and
a parent's child rows replaced where the parent changed."""

from __future__ import annotations

from typing import Any

from psycopg2 import sql

from services.loaders.core.plan import Segment, Staged
from services.loaders.core.system_columns import BATCHED_AT, ROW, SEQUENCE, SOURCE_KEY
from services.loaders.postgres.staging import stage
from services.loaders.postgres.statements import ident


def merge_segment(cur: Any, schema: str, segment: Segment, number: int, keep_won: bool) -> int:
    """Upsert (greater sequence wins) or append (deterministic key) the segment's rows, then
    replace the subtable rows of every parent row written. Returns the parent rows written.

    ``keep_won``: collect the keys of the parent rows written in ``won_<number>`` (for
    subtables); without subtables that bookkeeping is skipped."""
    root = segment.root
    keys = list(segment.key_columns)
    stg, win, won = f"stg_{number}", f"win_{number}", f"won_{number}"
    columns = stage(cur, root, stg)
    table = ident(schema, root.shape.name)
    key_list = sql.SQL(", ").join(map(ident, keys))
    cur.execute(
        sql.SQL("SELECT EXISTS (SELECT 1 FROM {} GROUP BY {} HAVING count(*) > 1)").format(
            ident(stg), key_list
        )
    )
    if cur.fetchone()[0]:  # a key more than once: keep its greatest sequence (then last)
        cur.execute(
            sql.SQL(
                """CREATE TEMP TABLE {win} ON COMMIT DROP AS
                   SELECT DISTINCT ON ({keys}) * FROM {stg}
                   ORDER BY {keys}, {seq} DESC, {row} DESC"""
            ).format(
                win=ident(win), keys=key_list, stg=ident(stg), seq=ident(SEQUENCE), row=ident(ROW)
            )
        )
    else:
        win = stg
    stamped = [] if BATCHED_AT in columns else [BATCHED_AT]  # else staged: the load's now()
    column_list = sql.SQL(", ").join(map(ident, [*columns, *stamped]))
    selected = sql.SQL(", ").join([*map(ident, columns), *(sql.SQL("now()") for _ in stamped)])
    if segment.key_names:
        updates = sql.SQL(", ").join(
            sql.SQL("{} = EXCLUDED.{}").format(ident(c), ident(c))
            for c in [*columns, *stamped]
            if c not in keys
        )
        conflict: sql.Composable = sql.SQL(
            "DO UPDATE SET {} WHERE t.{seq} IS NULL OR t.{seq} <= EXCLUDED.{seq}"
        ).format(updates, seq=ident(SEQUENCE))
    else:
        conflict = sql.SQL("DO NOTHING")
    insert = sql.SQL(
        """INSERT INTO {table} AS t ({columns}) SELECT {selected} FROM {win}
           ON CONFLICT ({keys}) {conflict}"""
    ).format(
        table=table,
        columns=column_list,
        selected=selected,
        win=ident(win),
        keys=key_list,
        conflict=conflict,
    )
    if not keep_won:
        cur.execute(insert)
        return int(cur.rowcount)
    cur.execute(
        sql.SQL("CREATE TEMP TABLE {} ON COMMIT DROP AS SELECT {} FROM {} LIMIT 0").format(
            ident(won), key_list, ident(win)
        )
    )
    cur.execute(
        sql.SQL("WITH up AS ({insert} RETURNING {keys}) INSERT INTO {won} SELECT * FROM up").format(
            insert=insert, keys=key_list, won=ident(won)
        )
    )
    written = int(cur.rowcount)
    for index, child in enumerate(segment.children.values()):
        _replace_children(cur, schema, child, keys, f"{stg}_c{index}", win, won)
    return written


def _replace_children(
    cur: Any, schema: str, child: Staged, keys: list[str], stg: str, win: str, won: str
) -> None:
    columns = stage(cur, child, stg)
    table = ident(schema, child.shape.name)
    match = sql.SQL(" AND ").join(
        sql.SQL("c.{} = w.{}").format(ident(SOURCE_KEY + k), ident(k)) for k in keys
    )
    cur.execute(
        sql.SQL("DELETE FROM {table} c USING {won} w WHERE {match}").format(
            table=table, won=ident(won), match=match
        )
    )
    on_keys = sql.SQL(" AND ").join(sql.SQL("p.{} = w.{}").format(ident(k), ident(k)) for k in keys)
    cur.execute(
        sql.SQL(
            """INSERT INTO {table} ({columns})
               SELECT {selected} FROM {stg} s
               JOIN {win} p ON p.{row} = s.{row}
               JOIN {won} w ON {on_keys}"""
        ).format(
            table=table,
            columns=sql.SQL(", ").join(map(ident, [*columns, BATCHED_AT])),
            selected=sql.SQL(", ").join(
                [*(sql.SQL("s.{}").format(ident(c)) for c in columns), sql.SQL("now()")]
            ),
            stg=ident(stg),
            win=ident(win),
            won=ident(won),
            row=ident(ROW),
            on_keys=on_keys,
        )
    )
