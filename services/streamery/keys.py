"""Deterministic object keys for batches (invariant 4).

    {client_id}/{table}/{partition}/{first_offset:020d}-{last_offset:020d}.jsonl.gz

Table names may hold any character but NUL: ``/``, ``..``, spaces, quotes, emoji. The table
segment is the name's UTF-8 bytes with every byte outside ``[A-Za-z0-9_-]`` percent-encoded
(``%XX``, upper-case hex), so it never contains ``/``, ``.``, ``%`` unescaped, two names never
share a segment, and ``decode_table`` gives the name back. S3 keys are limited to 1,024 bytes: a
segment longer than ``MAX_TABLE_SEGMENT`` keeps its first characters and ends in ``~`` plus 32 hex
digits of the name's SHA-256 (``~`` is never produced by the encoding, so the two forms cannot
collide). Such a segment is not reversible; the full name is in the spool's registration and in
the batch's header lines.

A Kafka message that is not in the records format (it cannot be assigned to a table) is kept
as it was under ``_unreadable/{partition}/{offset:020d}.bin`` and never registered.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

MAX_TABLE_SEGMENT = 600
_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
_DIGEST_HEX = 32
_KEY = re.compile(r"^(\d+)/([A-Za-z0-9_%~-]+)/(\d+)/(\d{20})-(\d{20})\.jsonl\.gz$")


def encode_table(table_name: str) -> str:
    """The table's key segment (see the module docstring)."""
    out = "".join(chr(b) if b in _SAFE else f"%{b:02X}" for b in table_name.encode("utf-8"))
    if len(out) <= MAX_TABLE_SEGMENT:
        return out
    digest = hashlib.sha256(table_name.encode("utf-8")).hexdigest()[:_DIGEST_HEX]
    prefix = out[: MAX_TABLE_SEGMENT - _DIGEST_HEX - 1]
    broken = prefix.rfind("%", len(prefix) - 2)  # never end inside a %XX escape
    if broken != -1:
        prefix = prefix[:broken]
    return f"{prefix}~{digest}"


def decode_table(segment: str) -> str | None:
    """The table name of a segment, or None for a shortened (hashed) one."""
    if "~" in segment:
        return None
    return unquote_to_bytes(segment).decode("utf-8")


def object_key(
    client_id: int, table_name: str, partition: int, first_offset: int, last_offset: int
) -> str:
    return (
        f"{client_id}/{encode_table(table_name)}/{partition}/"
        f"{first_offset:020d}-{last_offset:020d}.jsonl.gz"
    )


def unreadable_key(partition: int, offset: int) -> str:
    """Where a message that is not in the records format is kept (``_`` never starts a client
    id, so this prefix cannot collide with a batch key)."""
    return f"_unreadable/{partition}/{offset:020d}.bin"


@dataclass(frozen=True)
class ParsedKey:
    client_id: int
    table_name: str | None  # None when the segment was shortened
    partition: int
    first_offset: int
    last_offset: int


def parse_object_key(key: str) -> ParsedKey:
    """Inverse of ``object_key``; ValueError for anything else."""
    match = _KEY.match(key)
    if match is None:
        raise ValueError(f"not a batch object key: {key!r}")
    client, segment, partition, first, last = match.groups()
    return ParsedKey(int(client), decode_table(segment), int(partition), int(first), int(last))
