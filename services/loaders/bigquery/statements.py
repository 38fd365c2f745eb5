"""The SQL a lease runs in BigQuery, generated from plain data (pure).

Identifiers are always backtick-quoted (and escaped); every value from a record or a request
travels as a query parameter or through the staging load job, never as SQL text. The only
literals written into SQL are integers Skein computed (segment numbers, table versions).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from services.loaders.bigquery.plan import (
    BATCHED_AT,
    REJECTED_REASON,
    REJECTED_RECORD,
    REJECTED_SEGMENT,
    ROW,
    SEGMENT,
    Segment,
)
from services.loaders.core.system_columns import PRIMARY_KEY, SEQUENCE, TABLE_VERSION

LOADS = "_sdc_loads"
REJECTED = "_sdc_rejected"
RANK = "_sdc_rank"
ALREADY_LOADED = "skein: batches already loaded"
CANNOT_REKEY = "skein: the existing rows cannot be re-keyed"
# ``@batch_ids`` as a set and as an array of INT64. (goccy/bigquery-emulator hands INT64 array
# parameters over as strings; the casts cost BigQuery nothing.)
BATCH_IDS = "(SELECT CAST(x AS INT64) FROM UNNEST(@batch_ids) AS x)"
BATCH_ID_ARRAY = f"ARRAY{BATCH_IDS}"


def quote(name: str) -> str:
    """A backtick-quoted identifier; backslashes and backticks escaped, control characters
    refused (they cannot be part of a BigQuery name)."""
    if any(ord(c) < 0x20 for c in name):
        raise ValueError(f"identifier {name!r} holds a control character")
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


@dataclass(frozen=True)
class Dataset:
    project: str
    dataset: str

    def table(self, name: str) -> str:
        return f"{quote(self.project)}.{quote(self.dataset)}.{quote(name)}"


def _list(names: Iterable[str], prefix: str = "") -> str:
    return ", ".join(prefix + quote(n) for n in names)


def winners(staging: str, segment: Segment) -> str:
    """One segment's rows, one per key: the greatest sequence, ties going to the later row.
    (Run into a table of its own: MERGE's source must be a plain table for the emulator, and
    a plain table is also what BigQuery merges fastest.)"""
    columns = sorted(segment.columns)
    keys = list(segment.key_columns)
    ranked = (
        f"SELECT {_list(columns)}, ROW_NUMBER() OVER (PARTITION BY {_list(keys)} "
        f"ORDER BY {quote(SEQUENCE)} DESC, {quote(ROW)} DESC) AS {quote(RANK)} "
        f"FROM {staging} WHERE {quote(SEGMENT)} = {int(segment.number)}"
    )
    return f"SELECT {_list(columns)} FROM ({ranked}) WHERE {quote(RANK)} = 1"


def merge(target: str, source: str, segment: Segment) -> str:
    """Upsert one segment's winners (``source``): an older sequence arriving later never
    overwrites; append-only rows (deterministic key) are inserted once. The aliases are in the
    reserved ``_sdc_`` namespace: a client column named ``t`` would otherwise be read as the
    whole target row in ``UPDATE SET t = ...``."""
    columns = sorted(segment.columns)
    keys = list(segment.key_columns)
    on = " AND ".join(f"_sdc_t.{quote(k)} = _sdc_s.{quote(k)}" for k in keys)
    inserted = [*columns, BATCHED_AT]
    values = ", ".join([*(f"_sdc_s.{quote(c)}" for c in columns), "CURRENT_TIMESTAMP()"])
    sql = f"MERGE {target} AS _sdc_t\nUSING {source} AS _sdc_s\nON {on}\n"
    if segment.key_names:
        updates = ", ".join(
            [
                *(f"{quote(c)} = _sdc_s.{quote(c)}" for c in columns if c not in keys),
                f"{quote(BATCHED_AT)} = CURRENT_TIMESTAMP()",
            ]
        )
        seq = quote(SEQUENCE)
        sql += (
            f"WHEN MATCHED AND (_sdc_t.{seq} IS NULL OR _sdc_t.{seq} <= _sdc_s.{seq}) THEN\n"
            f"  UPDATE SET {updates}\n"
        )
    sql += f"WHEN NOT MATCHED THEN\n  INSERT ({_list(inserted)}) VALUES ({values})"
    return sql


def winners_table(staging: str, segment: Segment) -> str:
    return f"{staging}_{int(segment.number)}"


def rekey(target: str, previous: tuple[str, ...], keys: tuple[str, ...]) -> list[str]:
    """Statements that change a table's key from ``previous`` to ``keys``: fail (the
    transaction rolls back) unless the existing rows are unique and complete on the new key."""
    if previous == keys:
        return []
    out = []
    if keys == (PRIMARY_KEY,):
        out.append(
            f"UPDATE {target} SET {quote(PRIMARY_KEY)} = GENERATE_UUID() "
            f"WHERE {quote(PRIMARY_KEY)} IS NULL"
        )
    nulls = " OR ".join(f"{quote(k)} IS NULL" for k in keys)
    out.append(
        f"ASSERT (SELECT COUNT(*) FROM {target} WHERE {nulls}) = 0 AS '{CANNOT_REKEY}: nulls'"
    )
    out.append(
        f"ASSERT (SELECT COUNT(*) FROM (SELECT {_list(keys)} FROM {target} "
        f"GROUP BY {_list(keys)} HAVING COUNT(*) > 1)) = 0 AS '{CANNOT_REKEY}: duplicates'"
    )
    return out


def activate(target: str, segment: Segment) -> str:
    """Full-table replication: rows of older table versions are gone. The version is the
    parameter ``@version_<segment>`` (see ``versions``)."""
    column = quote(TABLE_VERSION)
    return f"DELETE FROM {target} WHERE {column} IS NULL OR {column} < @version_{segment.number}"


def versions(segments: list[Segment]) -> dict[str, int]:
    """The ``@version_<segment>`` parameters of the activations."""
    return {
        f"version_{s.number}": s.activate_version
        for s in segments
        if s.activate_version is not None
    }


def commit(
    dataset: Dataset,
    table: str,
    staging: str,
    segments: list[Segment],
    previous_key: tuple[str, ...] | None,
    rejected: int,
) -> str:
    """One transaction: the lease's merges, activations and rejections, and its batch ids in
    ``_sdc_loads`` — all or nothing. Parameters: ``@batch_ids``, ``@batch_records`` (arrays of
    INT64, same order), ``@table_name``, ``@lease_token``, ``@job_id``."""
    target = dataset.table(table)
    stg = dataset.table(staging)
    loads = dataset.table(LOADS)
    statements = [
        "BEGIN TRANSACTION",
        # A batch committed by another loader (or this one before a crash) under a different
        # lease's job: refuse to apply it twice.
        f"IF EXISTS (SELECT 1 FROM {loads} WHERE batch_id IN {BATCH_IDS}) THEN "
        f"RAISE USING MESSAGE = '{ALREADY_LOADED}'; END IF",
    ]
    key = previous_key
    for segment in segments:
        if segment.rows:
            if key is not None:
                statements += rekey(target, key, segment.key_columns)
            key = segment.key_columns
            statements.append(
                merge(target, dataset.table(winners_table(staging, segment)), segment)
            )
        if segment.activate_version is not None:
            statements.append(activate(target, segment))
    if rejected:
        statements.append(
            f"INSERT INTO {dataset.table(REJECTED)} "
            "(table_name, record, reason, batch_ids, rejected_at) "
            f"SELECT @table_name, {quote(REJECTED_RECORD)}, {quote(REJECTED_REASON)}, "
            f"{BATCH_ID_ARRAY}, CURRENT_TIMESTAMP() FROM {stg} "
            f"WHERE {quote(SEGMENT)} = {REJECTED_SEGMENT}"
        )
    statements.append(
        f"INSERT INTO {loads} (batch_id, table_name, lease_token, records, job_id, loaded_at) "
        "SELECT CAST(id AS INT64), @table_name, @lease_token, CAST(n AS INT64), @job_id, "
        "CURRENT_TIMESTAMP() "
        "FROM UNNEST(@batch_ids) AS id WITH OFFSET AS i "
        "JOIN UNNEST(@batch_records) AS n WITH OFFSET AS j ON i = j"
    )
    statements.append("COMMIT TRANSACTION")
    return ";\n".join(statements) + ";"


def _rekey_blocked(target: str, keys: tuple[str, ...]) -> str:
    nulls = " OR ".join(f"{quote(k)} IS NULL" for k in keys)
    return (
        f"(SELECT COUNT(*) FROM {target} WHERE {nulls}) > 0 OR "
        f"(SELECT COUNT(*) FROM (SELECT {_list(keys)} FROM {target} "
        f"GROUP BY {_list(keys)} HAVING COUNT(*) > 1)) > 0"
    )


def precheck(
    dataset: Dataset, table: str, segments: list[Segment], previous_key: tuple[str, ...] | None
) -> str:
    """One query that fails (``ERROR``) when the commit must not run: a batch already in
    ``_sdc_loads``, or a re-key at the start of the lease that the rows do not allow. The
    commit transaction checks again (a mid-lease re-key, races); this runs first because it
    fails fast and cheaply, and because goccy/bigquery-emulator ignores ASSERT and RAISE."""
    loaded = f"EXISTS (SELECT 1 FROM {dataset.table(LOADS)} WHERE batch_id IN {BATCH_IDS})"
    fine = "0"
    first = next((s for s in segments if s.rows), None)
    if (
        first is not None
        and previous_key is not None
        and first.key_columns != previous_key
        and first.key_columns != (PRIMARY_KEY,)  # filled with fresh UUIDs: always unique
    ):
        blocked = _rekey_blocked(dataset.table(table), first.key_columns)
        fine = f"IF({blocked}, ERROR('{CANNOT_REKEY}'), 0)"
    return f"SELECT IF({loaded}, ERROR('{ALREADY_LOADED}'), {fine}) AS ok"


def final_key(segments: list[Segment], previous: tuple[str, ...] | None) -> tuple[str, ...] | None:
    """The table's key after these segments (the last segment with rows decides)."""
    for segment in reversed(segments):
        if segment.rows:
            return segment.key_columns
    return previous
