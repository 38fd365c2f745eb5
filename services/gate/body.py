"""Reading and parsing request bodies within the Import API's limits.

The body is read from the stream with its size checked as it arrives (and gzip inflated with the
output bounded), so a 2 GB upload or a gzip bomb costs at most the limit in memory.
"""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import AsyncIterator
from typing import Any

import orjson

from services.gate.errors import ApiError, status_error

# orjson turns integers beyond 64 bits into floats, which would silently lose digits; a body
# with such a literal (or any 20+ digit run) is parsed by the stdlib instead, keeping them exact.
_LONG_NUMBER = re.compile(rb"\d{20,}|-\d{19}")


class Malformed(ValueError):
    """The body is not valid JSON (or not valid UTF-8)."""


class TooDeep(ValueError):
    """The JSON nests deeper than allowed."""


def too_large(limit: int) -> ApiError:
    return status_error(413, f"Request rejected: request size exceeds the maximum of {limit} bytes")


def check_content_type(content_type: str | None) -> None:
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media != "application/json":
        raise status_error(415, "Content-Type must be application/json")


async def read_limited(
    chunks: AsyncIterator[bytes], content_length: str | None, encoding: str | None, limit: int
) -> bytes:
    """The (inflated) body, at most ``limit`` bytes; 413 beyond, 400 for a broken gzip stream."""
    if content_length and content_length.isdigit() and int(content_length) > limit:
        raise too_large(limit)
    encoding = (encoding or "identity").strip().lower()
    if encoding not in ("identity", "gzip"):
        raise status_error(415, f"Content-Encoding {encoding!r} is not supported (use gzip)")
    inflater = zlib.decompressobj(wbits=31) if encoding == "gzip" else None
    parts: list[bytes] = []
    raw = size = 0
    try:
        async for chunk in chunks:
            raw += len(chunk)
            if raw > limit:
                raise too_large(limit)
            if inflater is not None:
                # Never inflate more than what is left of the limit (+1 to detect overflow).
                chunk = inflater.decompress(chunk, limit - size + 1)
                if inflater.unconsumed_tail:
                    raise too_large(limit)
            size += len(chunk)
            if size > limit:
                raise too_large(limit)
            parts.append(chunk)
        if inflater is not None:
            tail = inflater.flush()
            size += len(tail)
            if size > limit:
                raise too_large(limit)
            parts.append(tail)
            if not inflater.eof:
                raise status_error(400, "The gzip body is truncated")
    except zlib.error as exc:
        raise status_error(400, f"The body is not valid gzip: {exc}") from exc
    return b"".join(parts)


def _reject_constant(name: str) -> Any:
    raise Malformed(f"{name} is not valid JSON")


def parse_json(body: bytes, max_depth: int) -> Any:
    """Parse strictly: UTF-8 only, no NaN/Infinity, exact integers, at most ``max_depth`` deep."""
    if _LONG_NUMBER.search(body):
        try:
            text = body.decode("utf-8")
            value = json.loads(text, parse_constant=_reject_constant)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise Malformed(str(exc)) from exc
        except RecursionError as exc:
            raise TooDeep(f"JSON nests deeper than {max_depth} levels") from exc
    else:
        try:
            value = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            if "depth limit" in str(exc):
                raise TooDeep(f"JSON nests deeper than {max_depth} levels") from exc
            raise Malformed(str(exc)) from exc
    if too_deep(value, max_depth):
        raise TooDeep(f"JSON nests deeper than {max_depth} levels")
    return value


def too_deep(value: Any, limit: int) -> bool:
    """True when containers nest more than ``limit`` levels (the top level counts as one)."""
    if type(value) is not dict and type(value) is not list:
        return False
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        children = node.values() if type(node) is dict else node
        for child in children:
            kind = type(child)
            if kind is dict or kind is list:
                if depth >= limit:
                    return True
                stack.append((child, depth + 1))
    return False
