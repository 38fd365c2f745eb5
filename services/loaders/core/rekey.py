"""Giving a table with rows new key names, where the warehouse does not enforce keys (Redshift,
Snowflake): the rows must already be unique and non-null under the new keys, or the load is
refused before anything is written."""

from __future__ import annotations

from typing import Any

from services.loaders.core.errors import PermanentError
from services.loaders.core.shape import TableShape
from services.loaders.core.system_columns import PRIMARY_KEY


def check_rekey(
    cur: Any, shape: TableShape, keys: tuple[str, ...], fill_primary_key: str, bad_keys: str
) -> None:
    """Before a keyed table takes ``keys`` (in the load's transaction): when ``keys`` is the
    generated ``PRIMARY_KEY``, run ``fill_primary_key`` (give rows without one a value); then
    ``bad_keys`` counts the duplicate or null keys, any of which is a :class:`PermanentError`."""
    if keys == (PRIMARY_KEY,):
        cur.execute(fill_primary_key)
    cur.execute(bad_keys)
    found = cur.fetchone()
    if found and int(found[0]):
        raise PermanentError(
            f"key names of {shape.name} changed from {list(shape.primary_key)} to "
            f"{list(keys)} but the existing rows cannot be re-keyed ({found[0]} duplicate or "
            "null keys); fix the rows or the key names, then retry the batch"
        )
