"""The system columns every loader writes (Stitch's names), their types, and the deterministic
key of an append-only table's rows.

Shared by every warehouse, the de-nesting ones (``plan.PlanBuilder``) and BigQuery's own plan
alike; a warehouse that spells names its own way (Snowflake: upper case) maps these."""

from __future__ import annotations

import json
import uuid
from typing import Any

import orjson

from services.loaders.core.types import ColumnType

RECEIVED_AT = "_sdc_received_at"
BATCHED_AT = "_sdc_batched_at"
SEQUENCE = "_sdc_sequence"
TABLE_VERSION = "_sdc_table_version"
EXTRACTED_AT = "_sdc_extracted_at"
PRIMARY_KEY = "__sdc_primary_key"
ROW = "_sdc_row"  # staging only: arrival order, for ties and to join children to parents
SOURCE_KEY = "_sdc_source_key_"
LEVEL = "_sdc_level_{}_id"

SYSTEM_TYPES = {
    RECEIVED_AT: ColumnType.TIMESTAMP,
    BATCHED_AT: ColumnType.TIMESTAMP,
    SEQUENCE: ColumnType.BIGINT,
    TABLE_VERSION: ColumnType.BIGINT,
    EXTRACTED_AT: ColumnType.TIMESTAMP,
    PRIMARY_KEY: ColumnType.TEXT,
}
_KEY_NAMESPACE = uuid.UUID("6f1c3c1e-5b7e-4d3a-9a53-5e2b1c0d5e11")


def append_only_key(table: str, sequence: int, data: dict[str, Any]) -> str:
    """Deterministic ``__sdc_primary_key``: a resent record (same table, sequence and content)
    gets the same key and collapses onto the first copy."""
    try:
        canonical = orjson.dumps(data, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # integers beyond 64 bits
        canonical = json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
    name = f"{table}\x00{sequence}\x00".encode() + canonical
    return str(uuid.uuid5(_KEY_NAMESPACE, name.hex()))
