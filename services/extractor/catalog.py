"""Choosing what a tap extracts: stream selection and replication in its Singer catalog (pure)."""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any


class CatalogError(ValueError):
    """The catalog, or the selection asked of it, is unusable."""


def _root_metadata(stream: dict[str, Any]) -> dict[str, Any]:
    entries = stream.setdefault("metadata", [])
    for entry in entries:
        if entry.get("breadcrumb") == []:
            meta: dict[str, Any] = entry.setdefault("metadata", {})
            return meta
    meta = {}
    entries.insert(0, {"breadcrumb": [], "metadata": meta})
    return meta


def stream_names(catalog: Mapping[str, Any]) -> list[str]:
    """Each stream's ``tap_stream_id``."""
    streams = catalog.get("streams")
    if not isinstance(streams, list):
        raise CatalogError("the tap's catalog has no 'streams' list")
    return [str(s.get("tap_stream_id") or s.get("stream")) for s in streams]


def select(
    catalog: Mapping[str, Any],
    streams: Iterable[str] = (),
    replication_keys: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """A copy of ``catalog`` with ``streams`` selected (all streams when none are named).

    A stream given a replication key (``replication_keys[stream] = column``) replicates
    INCREMENTAL on that column and is selected too; the other selected streams keep the
    method the tap forces, or FULL_TABLE. Streams are named by ``tap_stream_id`` or ``stream``.
    """
    replication_keys = dict(replication_keys or {})
    chosen = set(streams) | set(replication_keys)
    result = copy.deepcopy(dict(catalog))
    known = stream_names(result)
    aliases = {
        str(s.get("stream")): str(s.get("tap_stream_id") or s.get("stream"))
        for s in result["streams"]
    }
    resolved = {aliases.get(name, name) for name in chosen}
    unknown = sorted(n for n in chosen if aliases.get(n, n) not in known)
    if unknown:
        raise CatalogError(
            f"no stream {', '.join(unknown)} in the tap's catalog; it has: {', '.join(known)}"
        )
    keys = {aliases.get(n, n): col for n, col in replication_keys.items()}
    for stream in result["streams"]:
        stream_id = str(stream.get("tap_stream_id") or stream.get("stream"))
        meta = _root_metadata(stream)
        selected = not chosen or stream_id in resolved
        meta["selected"] = selected
        if not selected:
            continue
        if stream_id in keys:
            column = keys[stream_id]
            if column not in stream.get("schema", {}).get("properties", {}):
                raise CatalogError(f"stream {stream_id} has no column {column!r}")
            meta["replication-method"] = "INCREMENTAL"
            meta["replication-key"] = column
            stream["replication_method"] = "INCREMENTAL"
            stream["replication_key"] = column
        else:
            method = meta.get("forced-replication-method") or "FULL_TABLE"
            meta["replication-method"] = method
            stream["replication_method"] = method
    return result


def selected_streams(catalog: Mapping[str, Any]) -> list[dict[str, Any]]:
    """(stream, replication method, replication key) of each selected stream."""
    out = []
    for stream in catalog.get("streams", []):
        meta: dict[str, Any] = next(
            (
                e.get("metadata", {})
                for e in stream.get("metadata", [])
                if e.get("breadcrumb") == []
            ),
            {},
        )
        if meta.get("selected"):
            out.append(
                {
                    "stream": stream.get("tap_stream_id") or stream.get("stream"),
                    "replication_method": meta.get("replication-method"),
                    "replication_key": meta.get("replication-key"),
                }
            )
    return out
