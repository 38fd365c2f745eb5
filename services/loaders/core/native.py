"""Compiled record plans run natively (decision 12), where the ``skein_loader_native`` module
is installed (``make install`` builds it from ``services/loaders/native/`` when cargo is at
hand; the images build it) and the loader renders as the Postgres loader does.

The Python plans (``fastplan``) stay the definition: a native plan is made from the same shape
and layout as its Python plan, and ``stage`` takes a batch object's lines from its inflated text
(``reader.RecordText``) for as long as one of a segment's plans takes each, staging exactly the
line the Python plan would (``tests/unit/test_loader_fastplan.py``). The first line it does not
take, Python reads.
What that saves: the Python plan's checks and f-string, and orjson's parse and the ``Record``
before them: the Postgres loader's ~5.9 CPU-us a record become ~2.0.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from services.loaders.core.fastplan import Layout, Leaf

try:
    import skein_loader_native as _native
except ImportError:  # not built here: the Python plans run
    _native = None  # type: ignore[assignment, unused-ignore]

if TYPE_CHECKING:
    from skein_loader_native import Plan as NativePlan


def available() -> bool:
    return _native is not None


def stages_text(warehouse: object) -> bool:
    """Whether ``warehouse`` is handed its batches' record lines unread (``RecordText``): its
    plans run natively (it says so with a true ``stages_text``) and the module is installed."""
    return available() and bool(getattr(warehouse, "stages_text", False))


def plan(
    data: dict[str, Any],
    leaves: list[Leaf],
    objects: list[tuple[tuple[str, ...], int]],
    layout: Layout,
) -> NativePlan | None:
    """The native form of the plan compiled from the record ``data`` (its ``leaves``,
    ``objects`` and ``layout``), or None where there is none: not installed, or a layout it
    does not write (explicit row numbers, append-only keys). Fields are listed in ``data``'s
    order, the order the records of its shape most likely list theirs in."""
    if _native is None or layout.row is not None or layout.append_key is not None:
        return None
    sizes = dict(objects)
    found = {leaf.path: leaf for leaf in leaves}
    at = {leaf.path: position for leaf, position in layout.data}
    fields: list[tuple[list[str], str, str | None, int]] = []

    def walk(obj: dict[str, Any], path: tuple[str, ...]) -> None:
        for key, value in obj.items():
            here = (*path, key)
            if here in sizes:
                fields.append((list(here), "object", None, sizes[here]))
                walk(value, here)
                continue
            leaf = found[here]
            kind = None if leaf.kind is None else leaf.kind.value
            fields.append((list(here), leaf.python_type.__name__, kind, at.get(here, -1)))

    try:
        walk(data, ())
        return _native.Plan(
            sizes[()],
            fields,
            layout.width,
            layout.received_at,
            layout.sequence,
            layout.batched_at,
            layout.table_version,
            layout.extracted_at,
        )
    except (KeyError, ValueError):  # a leaf type it cannot render: the Python plan alone
        return None


def stage(
    text: bytes,
    start: int,
    end: int,
    limit: int,
    plans: list[NativePlan] | None,
    extracted_plans: list[NativePlan] | None,
    context: tuple[str, str, str | None],
) -> tuple[bytes, bytes, bytes, int, int, list[int], list[int]]:
    """``skein_loader_native.stage``: ``text[start:end]``'s lines (each ending in a newline),
    at most ``limit``, staged until one is not taken; ``context`` is (received_at,
    table_version, batched_at) as the rows carry them."""
    assert _native is not None
    received, version, batched = context
    return _native.stage(
        text, start, end, limit, plans, extracted_plans, received, version, batched or ""
    )
