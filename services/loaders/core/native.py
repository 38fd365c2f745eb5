"""Compiled record plans run natively (decision 12), where the ``skein_loader_native`` module
is installed (``make install`` builds it from ``services/loaders/native/`` when cargo is at
hand; the images build it) and the loader renders as the Postgres loader does.

The Python plans (``fastplan``) stay the definition: a native plan is made from the same shape
and layout as its Python plan, and ``stage`` takes plain record lines (``reader.RecordLines``)
for as long as one of a segment's plans takes each, staging exactly the line the Python plan
would (``tests/unit/test_loader_native.py``). The first line it does not take, Python reads.
What that saves: the Python plan's checks and f-string, and orjson's parse and the ``Record``
before them, ~4.5 of the Postgres loader's ~6 us a record.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from services.loaders.core.fastplan import Layout, Leaf

try:
    import skein_loader_native as _native
except ImportError:  # not built here: the Python plans run
    _native = None  # type: ignore[assignment, unused-ignore]

if TYPE_CHECKING:
    from skein_loader_native import Plan as NativePlan


def available() -> bool:
    return _native is not None


def plan(
    leaves: list[Leaf], objects: list[tuple[tuple[str, ...], int]], layout: Layout
) -> NativePlan | None:
    """The native form of the plan compiled from ``leaves``, ``objects`` and ``layout``, or
    None where there is none: not installed, or a layout it does not write (explicit row
    numbers, append-only keys)."""
    if _native is None or layout.row is not None or layout.append_key is not None:
        return None
    at = {id(leaf): position for leaf, position in layout.data}
    try:
        return _native.Plan(
            [(list(path), size) for path, size in objects],
            [
                (
                    list(leaf.path),
                    leaf.python_type.__name__,
                    None if leaf.kind is None else leaf.kind.value,
                    at.get(id(leaf), -1),
                )
                for leaf in leaves
            ],
            layout.width,
            layout.received_at,
            layout.sequence,
            layout.batched_at,
            layout.table_version,
            layout.extracted_at,
        )
    except ValueError:  # a leaf type it cannot render: the Python plan alone
        return None


def stage(
    lines: list[bytes],
    start: int,
    plans: list[NativePlan] | None,
    extracted_plans: list[NativePlan] | None,
    context: tuple[str, str, str | None],
) -> tuple[bytes, bytes, bytes, int, list[int], list[int]]:
    """``skein_loader_native.stage``: lines staged from ``lines[start:]`` until one is not
    taken; ``context`` is the header's (received_at, table_version, batched_at) as rendered."""
    assert _native is not None
    received, version, batched = context
    return _native.stage(
        lines,
        start,
        plans,
        extracted_plans,
        received,
        version,
        batched or "",
        len(lines) - start,
    )
