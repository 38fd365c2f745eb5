"""Streaming batch objects: S3 -> gunzip -> JSON lines, in bounded memory.

A batch object (written by the streamery) is gzip JSON lines: header lines (``{"v": 1, ...}``,
the wire format of ``common.wire``) and record lines (``{"action": ...}``), in Kafka order.
"""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from common.wire import Header
from services.loaders.core.errors import PermanentError

_LONG_NUMBER = re.compile(rb"\d{20,}|-\d{19}")
CHUNK = 1024 * 1024


@dataclass(frozen=True)
class Record:
    action: str  # "upsert" | "activate_version"
    sequence: int
    data: dict[str, Any] | None
    time_extracted: str | None
    raw: bytes  # the line as written, for _sdc_rejected


def parse_line(line: bytes) -> dict[str, Any]:
    """orjson, except that integers beyond 64 bits stay exact (orjson would make them floats)."""
    if _LONG_NUMBER.search(line):
        parsed: dict[str, Any] = json.loads(line)
        return parsed
    loaded: dict[str, Any] = orjson.loads(line)
    return loaded


def lines_of(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Inflate a gzip stream chunk by chunk and yield its lines (without the newline)."""
    inflater = zlib.decompressobj(wbits=31)
    pending = b""
    try:
        for chunk in chunks:
            data = pending + inflater.decompress(chunk)
            *complete, pending = data.split(b"\n")
            yield from (line for line in complete if line)
        data = pending + inflater.flush()
    except zlib.error as exc:
        raise PermanentError(f"batch object is not valid gzip: {exc}") from exc
    if not inflater.eof:
        raise PermanentError("batch object is truncated (gzip stream incomplete)")
    if data:
        yield data


def events(lines: Iterable[bytes]) -> Iterator[Header | Record]:
    """Headers and records of a batch object, in order."""
    seen_header = False
    for line in lines:
        try:
            raw = parse_line(line)
        except (ValueError, TypeError) as exc:
            raise PermanentError(f"batch object holds a line that is not JSON: {exc}") from exc
        if "v" in raw and "client_id" in raw:
            try:
                yield Header.decode(line)
            except (KeyError, ValueError) as exc:
                raise PermanentError(f"unreadable batch header: {exc}") from exc
            seen_header = True
            continue
        if not seen_header:
            raise PermanentError("batch object does not start with a header line")
        yield Record(
            action=raw.get("action", "upsert"),
            sequence=int(raw.get("sequence", 0)),
            data=raw.get("data"),
            time_extracted=raw.get("time_extracted"),
            raw=line,
        )


def s3_chunks(s3: Any, bucket: str, key: str) -> Iterator[bytes]:
    """The object's bytes in 1 MiB chunks (boto3 streaming body; never the whole object)."""
    body = s3.get_object(Bucket=bucket, Key=key)["Body"]
    try:
        yield from body.iter_chunks(CHUNK)
    finally:
        body.close()
