"""Reading and parsing request bodies within the Import API's limits.

The body is read from the stream with its size checked as it arrives (and gzip inflated with the
output bounded), so a 2 GB upload or a gzip bomb costs at most the limit in memory.
"""

from __future__ import annotations

import json
import sys
import zlib
from collections.abc import AsyncIterator
from typing import Any

import orjson

from common.wire import may_hold_long_integer
from services.gate.errors import ApiError, status_error


class Malformed(ValueError):
    """The body is not valid JSON (or not valid UTF-8)."""


class NumberTooLong(Malformed):
    """An integer literal longer than Python converts; answered with its own 400 message."""


class TooDeep(ValueError):
    """The JSON nests deeper than allowed."""


def too_large(limit: int) -> ApiError:
    return status_error(413, f"Request rejected: request size exceeds the maximum of {limit} bytes")


def check_content_type(content_type: str | None) -> None:
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media != "application/json":
        raise status_error(415, "Content-Type must be application/json")


class _Gunzip:
    """Inflates a gzip body of one or more members (RFC 1952: concatenated members are one
    stream, as ``gzip -c a b`` or pigz write them); anything after a member that is not another
    member is a zlib error (400), never silently dropped."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._member = zlib.decompressobj(wbits=31)

    def inflate(self, data: bytes, room: int) -> bytes:
        """``data`` inflated; never more than ``room`` + 1 bytes (+1 lets the caller see 413)."""
        out: list[bytes] = []
        while data and room >= 0:
            if self._member.eof:
                self._member = zlib.decompressobj(wbits=31)
            piece = self._member.decompress(data, room + 1)
            if self._member.unconsumed_tail:
                raise too_large(self._limit)
            out.append(piece)
            room -= len(piece)
            data = self._member.unused_data
        return b"".join(out)

    @property
    def complete(self) -> bool:
        return self._member.eof


async def read_limited(
    chunks: AsyncIterator[bytes], content_length: str | None, encoding: str | None, limit: int
) -> bytes:
    """The (inflated) body, at most ``limit`` bytes; 413 beyond, 400 for a broken gzip stream."""
    if content_length and content_length.isdigit() and int(content_length) > limit:
        raise too_large(limit)
    encoding = (encoding or "identity").strip().lower()
    if encoding not in ("identity", "gzip"):
        raise status_error(415, f"Content-Encoding {encoding!r} is not supported (use gzip)")
    inflater = _Gunzip(limit) if encoding == "gzip" else None
    parts: list[bytes] = []
    raw = size = 0
    try:
        async for chunk in chunks:
            raw += len(chunk)
            if raw > limit:
                raise too_large(limit)
            if inflater is not None:
                chunk = inflater.inflate(chunk, limit - size)
            size += len(chunk)
            if size > limit:
                raise too_large(limit)
            parts.append(chunk)
        if inflater is not None and not inflater.complete:
            raise status_error(400, "The gzip body is truncated")
    except zlib.error as exc:
        raise status_error(400, f"The body is not valid gzip: {exc}") from exc
    return b"".join(parts)


def _reject_constant(name: str) -> Any:
    raise Malformed(f"{name} is not valid JSON")


def _finite_float(literal: str) -> float:
    # As orjson does: a literal beyond a double's range (1e400) is refused, not made infinite.
    value = float(literal)
    if value in (float("inf"), float("-inf")):
        raise Malformed(f"number {literal[:40]} is out of range")
    return value


# One C-speed pass over the body serves two checks: digits become "0" (for
# ``may_hold_long_integer``) and the bytes that start a value (",", "[", "{") become "," (their
# count bounds the values, for the depth check's indented copy); the rest ".".
_SCAN = bytes(0x30 if 0x30 <= b <= 0x39 else 0x2C if b in b",[{" else 0x2E for b in range(256))


def _bounded_int(literal: str) -> int:
    """An exact integer; one longer than Python converts (4,300 digits by default) is a client
    error, not a ValueError from deep inside the parse."""
    digits = len(literal.lstrip("-"))
    if digits > _MAX_INT_DIGITS:
        raise NumberTooLong(
            f"an integer of {digits} digits is longer than the {_MAX_INT_DIGITS} allowed"
        )
    return int(literal)


_MAX_INT_DIGITS = sys.get_int_max_str_digits() or 4300


def parse_json(body: bytes, max_depth: int) -> Any:
    """Parse strictly: UTF-8 only, no NaN/Infinity, exact integers, at most ``max_depth`` deep.

    Cheap checks first, at C speed over bytes (a regular expression over every body, or a
    Python walk over every parsed value, each cost more than the parse itself):
    - long numbers: orjson reads an integer beyond 64 bits as a float, so a body with a run of
      19+ digits (found in the scanned copy, see ``_SCAN``) is checked with the exact pattern
      and, if it holds such a literal, parsed by the stdlib, exactly;
    - depth: orjson's indented output puts a container's contents 2 spaces deeper per level,
      so only when some line is indented ``2 * max_depth`` spaces can a container be nested too
      deep, and only then are the containers walked to tell.
    """
    scanned = body.translate(_SCAN)
    long_number, values = may_hold_long_integer(body, scanned), scanned.count(b",") + 1
    del scanned  # a copy of the body: not kept while the parse builds its values
    if long_number:
        try:
            text = body.decode("utf-8")
            value = json.loads(
                text,
                parse_constant=_reject_constant,
                parse_float=_finite_float,
                parse_int=_bounded_int,
            )
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise Malformed(str(exc)) from exc
        except RecursionError as exc:
            raise TooDeep(f"JSON nests deeper than {max_depth} levels") from exc
        if _has_lone_surrogate(value):  # orjson refuses "\ud800"; the stdlib does not
            raise Malformed("a string holds a lone UTF-16 surrogate escape")
    else:
        try:
            value = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            if "depth limit" in str(exc):
                raise TooDeep(f"JSON nests deeper than {max_depth} levels") from exc
            raise Malformed(str(exc)) from exc
    if too_deep(value, max_depth, body, values=values):
        raise TooDeep(f"JSON nests deeper than {max_depth} levels")
    return value


def too_deep(value: Any, limit: int, text: bytes | None = None, values: int | None = None) -> bool:
    """True when containers nest more than ``limit`` levels (the top level counts as one).
    ``text``: the JSON ``value`` was parsed from, if at hand; ``values``: at least the number of
    values in it, if known."""
    if type(value) is not dict and type(value) is not list:
        return False
    if text is None:
        try:
            text = orjson.dumps(value)
        except TypeError:  # integers beyond 64 bits
            return _walk_too_deep(value, limit)
    if _indented_size_bound(text, limit, values) > _MAX_INDENTED_BYTES:
        return _walk_too_deep(value, limit)  # the indented copy could be huge: walk instead
    try:
        indented = orjson.dumps(value, option=orjson.OPT_INDENT_2)
    except (TypeError, orjson.JSONEncodeError):  # integers beyond 64 bits: walk instead
        return _walk_too_deep(value, limit)
    if b"\n" + b" " * (2 * limit) not in indented:
        return False  # no value is inside ``limit`` containers, so no container is either
    return _walk_too_deep(value, limit)


# Each value of the indented copy starts a line of up to 2 spaces per level, and orjson parses
# up to 1,024 levels: many values nested deep would indent to many times the body's size. The
# copy is made only when even that worst case stays under this (one copy at a time per worker,
# as parsing runs on its event loop); a larger body is walked instead.
_MAX_INDENTED_BYTES = 64 * 1024 * 1024
_ORJSON_MAX_DEPTH = 1024


def _indented_size_bound(text: bytes, limit: int, values: int | None = None) -> int:
    """More than the indented size of the JSON ``text`` (byte counts at C speed), given at
    least its number of values if known."""
    if values is None:
        values = text.count(b",") + text.count(b"[") + text.count(b"{") + 1
    return 2 * len(text) + values * (2 * max(limit, _ORJSON_MAX_DEPTH) + 2)


def _walk_too_deep(value: Any, limit: int) -> bool:
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


def _has_lone_surrogate(value: Any) -> bool:
    stack = [value]
    while stack:
        node = stack.pop()
        if type(node) is dict:
            stack.extend(node.keys())
            stack.extend(node.values())
        elif type(node) is list:
            stack.extend(node)
        elif type(node) is str and not node.isascii():
            try:
                node.encode("utf-8")
            except UnicodeEncodeError:
                return True
    return False
