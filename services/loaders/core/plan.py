"""Turning a lease's batches into staged rows per warehouse table (pure but for a spill file).

The records of one table arrive in Kafka order. They are cut into *segments* wherever an
``activate_version`` closes one or the key names change; each segment is merged on its own, in
order. Every value is placed in a column (``shape.place``), rendered to the warehouse's COPY
text by the warehouse's ``render``, and spilled to a temporary file, so a lease of any size
loads in bounded memory. Records that cannot be loaded are kept with the reason for
``_sdc_rejected``. The system columns are ``system_columns``, the spill file ``spill``.

Over 400 lines, on purpose: ``PlanBuilder`` is one algorithm, the general path and the
compiled fast path (``fastplan``) that it learns from its own decisions, sharing one lease's
placement state; its output (``Staged``, ``Segment``) stays beside it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import orjson

from common.spool_client import Lease
from common.wire import Header
from services.loaders.core import native, notes
from services.loaders.core.denest import (
    Denested,
    Row,
    denest,
    flat_row,
    is_flat,
    nested_row,
    properties,
)
from services.loaders.core.fastplan import Inline, Layout, Plan, compile_plan, leaves
from services.loaders.core.names import SEPARATOR, NameRules
from services.loaders.core.reader import Event, Record, RecordText, event_of, line_at
from services.loaders.core.shape import ColumnLimit, TableShape, place
from services.loaders.core.spill import Spill
from services.loaders.core.system_columns import (
    BATCHED_AT,
    EXTRACTED_AT,
    LEVEL,
    PRIMARY_KEY,
    RECEIVED_AT,
    ROW,
    SEQUENCE,
    SOURCE_KEY,
    SYSTEM_TYPES,
    TABLE_VERSION,
    append_only_key,
)
from services.loaders.core.types import ColumnType, parse_timestamp

if TYPE_CHECKING:
    from skein_loader_native import Plan as NativePlan


@dataclass
class LeaseLoad:
    """What one load writes: a lease's not-yet-loaded batches of one table, as one stream of
    events (each batch's header, then its records), in one transaction."""

    table_source: str
    batch_ids: list[int]
    lease_token: str
    events: Iterable[Event]
    batch_records: list[int] | None = None  # records in each batch (from the spool)

    @classmethod
    def of(cls, lease: Lease, batch_ids: list[int], events: Iterable[Event]) -> LeaseLoad:
        return cls(
            lease.table_name, batch_ids, lease.lease_token, events, lease.record_counts(batch_ids)
        )


_PLANS_PER_SHAPE_KEY = 16  # record shapes remembered per segment and header context
_COMPILES_PER_LEASE = 64  # ~0.1-0.2 ms each
_SCHEMAS_REMEMBERED = 64

Render = Callable[[ColumnType, Any], str]


class Rejected(ValueError):
    """This record cannot be loaded (the reason goes to ``_sdc_rejected``)."""


def aware_timestamp(value: Any) -> datetime:
    """A date-time field as a zone-aware value (UTC when it names no zone), for a ``Render``;
    ``Rejected`` when it is no date-time."""
    parsed = parse_timestamp(str(value))
    if parsed is None:
        raise Rejected(f"not a date-time: {value!r}")
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


@dataclass
class Staged:
    """One table's rows of a segment, and the staging column order they were written in."""

    shape: TableShape
    spill: Spill = field(default_factory=Spill)
    order: list[str] = field(default_factory=list)
    index: dict[str, int] = field(default_factory=dict)

    def append(self, row: dict[str, str]) -> None:
        fields = [""] * len(self.order)
        for column, text in row.items():
            at = self.index.get(column)
            if at is None:
                at = self.index[column] = len(self.order)
                self.order.append(column)
                fields.append(text)
            else:
                fields[at] = text
        self.spill.append(fields)


@dataclass
class Segment:
    """Records to merge together, then (optionally) a table-version activation."""

    key_names: tuple[str, ...]  # source key names; empty = append-only
    key_columns: tuple[str, ...]  # their warehouse columns (PRIMARY_KEY for append-only)
    root: Staged
    children: dict[str, Staged] = field(default_factory=dict)  # by source path
    activate_version: int | None = None
    rows: int = 0
    # Compiled plans (``fastplan``) by (schema, has table version, has time_extracted),
    # most recently used first.
    plans: dict[tuple[int, bool, bool], list[Plan]] = field(default_factory=dict)

    def close(self) -> None:
        self.root.spill.close()
        for child in self.children.values():
            child.spill.close()


class _Cut(Protocol):
    """What the segment cut reads of a segment (this module's ``Segment``, BigQuery's own)."""

    @property
    def key_names(self) -> tuple[str, ...]: ...

    @property
    def activate_version(self) -> int | None: ...


_SegmentT = TypeVar("_SegmentT", bound=_Cut)


def segment_for(
    segments: list[_SegmentT],
    header: Header | None,
    column: Callable[[str], str],
    new: Callable[[tuple[str, ...], tuple[str, ...]], _SegmentT],
) -> _SegmentT:
    """The segment the next record under ``header`` belongs to: the last one, unless an
    ``activate_version`` closed it or the key names changed; else ``new(key names, key
    columns)`` (each key's ``column``, or ``PRIMARY_KEY`` for append-only), appended."""
    assert header is not None
    keys = header.key_names
    if segments:
        last = segments[-1]
        if last.activate_version is None and last.key_names == keys:
            return last
    key_columns = tuple(column(k) for k in keys) if keys else (PRIMARY_KEY,)
    segment = new(keys, key_columns)
    segments.append(segment)
    return segment


def activated_version(header: Header | None, record: Record) -> int:
    """The table version an ``activate_version`` record activates: its header's, if set, else
    the record's sequence."""
    version = header.table_version if header else None
    return version if version is not None else record.sequence


@dataclass
class Rejection:
    record: bytes
    reason: str


class PlanBuilder:
    """Feed a lease's events in order; get the segments to merge and the rejected records."""

    def __init__(
        self,
        table_source: str,
        rules: NameRules,
        render: Render,
        shapes: dict[str, TableShape],
        keep_nesting: bool = False,
        inline: Mapping[ColumnType, Inline] | None = None,
        plain_inline: Mapping[ColumnType, Inline] | None = None,
        compiled: bool = True,
        implicit_row: bool = False,
        batched_at: str | None = None,
        native_plans: bool = False,
    ) -> None:
        self.table_source = table_source
        # True: objects and arrays stay whole (VARIANT) in the root row; no subtables.
        self.keep_nesting = keep_nesting
        self.rules = rules
        self.render = render
        # Optional: ``render`` per column type inlined into the compiled plans (``Inline``;
        # saves a call per value; must equal ``render`` exactly).
        self.inline = inline or {}
        # Optional: the same for values of records whose line holds no backslash (``plain``
        # in ``compile_plan``).
        self.plain_inline = plain_inline or {}
        self.compiled = compiled and not keep_nesting  # False: the general path only
        # True: root rows carry no ``_sdc_row`` field; a root row's number is its line number
        # in its spill (1-based; the warehouse numbers them as it reads them, and a child row's
        # ``_sdc_row`` is its parent's line number). A warehouse that can do so copies root
        # rows straight into the table (Postgres).
        self.implicit_row = implicit_row
        # The load's ``_sdc_batched_at`` (rendered) on every root row, where the warehouse
        # does not stamp it itself while merging.
        self.batched_at = batched_at
        # True: ``render`` and ``plain_inline`` are the Postgres loader's, so a plan's native
        # form (``native``), which writes what they write, may stage ``RecordText`` for it.
        self.native_plans = native_plans and self.compiled and native.available()
        self._native_skip = 0  # lines not offered to the native plans (see ``feed_text``)
        self._refusals = 0
        self.shapes = shapes  # warehouse table name -> shape (existing tables pre-filled)
        self._earlier_subtables: set[str] = set()  # see ``subtable_shape``
        self.segments: list[Segment] = []
        self.rejected: list[Rejection] = []
        self._header: Header | None = None
        self._row = 0
        # (table, source column, type) -> column: placement is stable within a lease, so each
        # distinct field is decided once, not once per record.
        self._placements: dict[tuple[str, str, ColumnType], str] = {}
        self._system_text: dict[tuple[str, Any], str] = {}
        # The fast path's header context: which schema (by content), and the header's texts
        # (received_at, table_version, batched_at) as the plans write them.
        self._schemas: dict[bytes, int] = {}
        self._schema_token: int | None = None
        self._plan_keys: tuple[tuple[int, bool, bool], tuple[int, bool, bool]] | None = None
        self._keys: tuple[str, ...] = ()  # the current header's key names
        self._compiles = 0
        self._context: tuple[str, str, str | None] = ("", "", None)

    # -- shapes
    def shape(self, source: str) -> TableShape:
        return self._shape(self.rules.table(source))

    def subtable_shape(self, path: str) -> TableShape:
        """The subtable of the array at ``path``. One that exists under the name the loader
        gave it before ``NameRules.subtable`` marked the names of long roots keeps that name."""
        name = self.rules.subtable(self.table_source, path)
        if name not in self.shapes:
            earlier = self.rules.table(f"{self.table_source}{SEPARATOR}{path}")
            found = self.shapes.get(earlier)
            if found is not None and found.exists:
                self._earlier_subtables.add(earlier)
                return found
        return self._shape(name)

    def is_subtable(self, name: str) -> bool:
        """Whether table ``name`` is a subtable of this root: by its name, or (named before
        the root's hash was added) because this lease's array rows go there."""
        return name in self._earlier_subtables or self.rules.subtable_of(name, self.table_source)

    def _shape(self, name: str) -> TableShape:
        found = self.shapes.get(name)
        if found is None:
            found = self.shapes[name] = TableShape(name)
        return found

    def _segment(self) -> Segment:
        return segment_for(
            self.segments,
            self._header,
            self.rules.column,
            lambda keys, columns: Segment(keys, columns, Staged(self.shape(self.table_source))),
        )

    # -- events
    def feed(self, event: Event) -> None:
        if isinstance(event, RecordText):
            self.feed_text(event.text, event.start, event.end)
            return
        if (
            type(event) is Record
            and event.action == "upsert"
            and self._plan_keys is not None
            and type(event.loose) is dict
        ):
            segments = self.segments
            # The common case first: another record of the current segment (``segment_for``'s
            # test, inlined: this runs once per record).
            if segments:
                last = segments[-1]
                if last.activate_version is None and last.key_names == self._keys:
                    if self._planned(last, event):
                        return
                    self._general(last, event)
                    return
        self._feed(event)

    def feed_text(self, text: bytes, start: int, end: int, limit: int | None = None) -> int:
        """Record lines of ``text[start:end]``, unread (``RecordText``), at most ``limit``:
        staged natively for as long as the plans take them (see ``native``), each other one
        read and fed as an event. Returns where it stopped."""
        fed = 0
        while start < end and (limit is None or fed < limit):
            if self.native_plans and not self._native_skip:
                taken, start = self._stage_natively(
                    text, start, end, len(text) if limit is None else limit - fed
                )
                fed += taken
                if start >= end or (limit is not None and fed >= limit):
                    break
            line, start = line_at(text, start, end)
            if line:  # blank lines are skipped, as the line reader skips them
                self.feed(event_of(line))
                fed += 1
            if self._native_skip:
                self._native_skip -= 1
        return start

    def _stage_natively(self, text: bytes, start: int, end: int, limit: int) -> tuple[int, int]:
        """How many of ``text[start:end]``'s lines (at most ``limit``) the current segment's
        native plans staged, and where they stopped."""
        keys = self._plan_keys
        segments = self.segments
        if keys is None or not segments:
            return 0, start
        last = segments[-1]
        if last.activate_version is not None or last.key_names != self._keys:
            return 0, start  # the next record opens a segment: Python's
        plans, extracted = last.plans.get(keys[0]), last.plans.get(keys[1])
        natives, extracted_natives = _natives(plans), _natives(extracted)
        if natives is None and extracted_natives is None:
            return 0, start
        staged, sizes, widths, taken, stop, order, extracted_order = native.stage(
            text, start, end, limit, natives, extracted_natives, self._context
        )
        # The line it stopped at is Python's. Lines the plans refuse one after another (another
        # shape, escapes) are not offered to them again at once: after the n-th call in a row
        # that took none, the next 2**n lines (at most 64) are not.
        self._refusals = 0 if taken else self._refusals + 1
        self._native_skip = min(2**self._refusals, 64) if self._refusals else 0
        if taken:
            # The plans' most-recently-used order, as ``_planned`` keeps it.
            if plans and natives is not None:
                plans[:] = [plans[n] for n in order]
            if extracted and extracted_natives is not None:
                extracted[:] = [extracted[n] for n in extracted_order]
            last.root.spill.append_rendered(staged, sizes, widths)
            last.rows += taken
            self._row += taken
        return taken, stop

    def _feed(self, event: Header | Record) -> None:
        if isinstance(event, Header):
            self._header = event
            self._keys = event.key_names
            self._header_context(event)
            return
        if event.action == "activate_version":
            self._segment().activate_version = activated_version(self._header, event)
            return
        if event.action != "upsert" or not isinstance(event.loose, dict):
            self.rejected.append(Rejection(event.raw, f"unknown action {event.action!r}"))
            notes.note_rejection(event.raw, f"unknown action {event.action!r}")
            return
        segment = self._segment()
        if not self._planned(segment, event):
            self._general(segment, event)

    def _general(self, segment: Segment, event: Record) -> None:
        """The general path; then a plan for the record's shape, if it allows one."""
        try:
            self._upsert(segment, event)
        except (Rejected, ColumnLimit) as exc:
            self.rejected.append(Rejection(event.raw, str(exc)))
            notes.note_rejection(event.raw, str(exc))
            return
        self._learn(segment, event)

    # -- the fast path (see fastplan)
    def _header_context(self, header: Header) -> None:
        schema = orjson.dumps(header.schema, option=orjson.OPT_SORT_KEYS)
        token = self._schemas.get(schema)
        if token is None and len(self._schemas) < _SCHEMAS_REMEMBERED:
            token = self._schemas[schema] = len(self._schemas)
        self._schema_token = token
        received = self.render(ColumnType.TIMESTAMP, header.received_at)
        version = header.table_version
        version_text = "" if version is None else self.render(ColumnType.BIGINT, version)
        if self.compiled and token is not None:
            with_version = version is not None
            self._plan_keys = ((token, with_version, False), (token, with_version, True))
        else:
            self._plan_keys = None
        self._context = (received, version_text, self.batched_at)

    def _plan_key(self, record: Record) -> tuple[int, bool, bool] | None:
        keys = self._plan_keys
        return None if keys is None else keys[1] if record.time_extracted else keys[0]

    def _planned(self, segment: Segment, record: Record) -> bool:
        """Stage the record through a compiled plan of its shape, if there is one."""
        keys = self._plan_keys
        if keys is None:
            return False
        plans = segment.plans.get(keys[1] if record.time_extracted else keys[0])
        raw = record.raw
        escaped = b"\\" in raw  # else the record is plain (see compile_plan)
        if not plans or (escaped and b"\\u0000" in raw):  # a NUL: the general path's
            return False
        data = record.loose
        row = self._row + 1
        row_text = "" if self.implicit_row else str(row)
        for n, plan in enumerate(plans):
            try:
                line = plan(
                    data,  # type: ignore[arg-type]
                    record.sequence,
                    row_text,
                    record.time_extracted,
                    self._context,
                    not escaped,
                )
            except Rejected:
                return False  # the general path says why
            if line is not None:
                if n:
                    plans.insert(0, plans.pop(n))
                self._row = row
                segment.root.spill.append_line(line, plan.width)  # type: ignore[attr-defined]
                segment.rows += 1
                return True
        return False

    def _learn(self, segment: Segment, record: Record) -> None:
        """Compile a plan from the record the general path just staged, if its shape allows."""
        key = self._plan_key(record)
        header = self._header
        if key is None or header is None or type(record.loose) is not dict:
            return
        plans = segment.plans.setdefault(key, [])
        if len(plans) >= _PLANS_PER_SHAPE_KEY or self._compiles >= _COMPILES_PER_LEASE:
            return  # records of ever new shapes: the general path, without compiling for each
        if b"\\u0000" in record.raw:
            return
        found = leaves(record.loose, properties(header.schema))
        if found is None:
            return
        leaves_found, objects = found
        root = segment.root
        name = root.shape.name
        index = root.index
        data: list[tuple[Any, int]] = []
        sources = set()
        for leaf in leaves_found:
            if leaf.source in sources:
                return  # "a__b" and {"a": {"b": ...}} meet in one name: the general path's
            sources.add(leaf.source)
            if leaf.kind is not None:
                column = self._placements.get((name, leaf.source, leaf.kind))
                if column is None or column not in index:
                    return
                data.append((leaf, index[column]))
        at = {leaf.source: position for leaf, position in data}
        if segment.key_names:
            for source, column in zip(segment.key_names, segment.key_columns, strict=True):
                if at.get(source) != index.get(column):
                    return
        layout = Layout(
            width=len(root.order),
            data=data,
            received_at=index[RECEIVED_AT],
            sequence=index[SEQUENCE],
            row=None if self.implicit_row else index[ROW],
            batched_at=None if self.batched_at is None else index[BATCHED_AT],
            table_version=index[TABLE_VERSION] if key[1] else None,
            extracted_at=index[EXTRACTED_AT] if key[2] else None,
            append_key=None if segment.key_names else index[PRIMARY_KEY],
        )
        table = self.table_source
        plan = compile_plan(
            leaves_found,
            objects,
            layout,
            self.render,
            self.inline,
            lambda sequence, record_data: append_only_key(table, sequence, record_data),
            self.plain_inline,
        )
        self._compiles += 1
        if plan is not None:
            if self.native_plans:
                plan.native = native.plan(record.loose, leaves_found, objects, layout)  # type: ignore[attr-defined]
            plans.insert(0, plan)

    def _upsert(self, segment: Segment, record: Record) -> None:
        header = self._header
        assert header is not None and record.data is not None
        data = record.data
        if self.keep_nesting:
            denested = Denested(nested_row(data, properties(header.schema)))
        elif is_flat(data):
            denested = Denested(flat_row(data, properties(header.schema)))
        else:
            denested = denest(data, header.schema)
        self._row += 1
        system: dict[str, tuple[Any, ColumnType]] = {
            RECEIVED_AT: (header.received_at, ColumnType.TIMESTAMP),
            SEQUENCE: (record.sequence, ColumnType.BIGINT),
        }
        if header.table_version is not None:
            system[TABLE_VERSION] = (header.table_version, ColumnType.BIGINT)
        if record.time_extracted:
            system[EXTRACTED_AT] = (record.time_extracted, ColumnType.TIMESTAMP)

        # Parent key values, rendered, for the row and for its children's source keys.
        keys: dict[str, str] = {}
        if segment.key_names:
            for source, column in zip(segment.key_names, segment.key_columns, strict=True):
                cell = denested.root.get(source)
                if cell is None:
                    raise Rejected(f"missing key property {source}")
                keys[column] = self._key_text(segment.root.shape, column, cell)
        else:
            key = append_only_key(self.table_source, record.sequence, data)
            keys[PRIMARY_KEY] = self.render(ColumnType.TEXT, key)
            segment.root.shape.ensure(PRIMARY_KEY, ColumnType.TEXT)
        key_types = {c: segment.root.shape.columns[c] for c in keys}

        # Place everything first (may reject), then spill.
        if self.implicit_row and ROW in denested.root:
            del denested.root[ROW]  # reserved (the gate refuses _sdc names): never a row number
        root = self._placed(segment.root, denested.root, system)
        root.update(keys)
        if self.batched_at is not None:
            root[BATCHED_AT] = self.batched_at
        if self.implicit_row:
            row_text = str(len(segment.root.spill) + 1)  # the line the root row is about to be
        else:
            row_text = root[ROW] = str(self._row)
        staged_children: list[tuple[Staged, dict[str, str]]] = []
        child_system = _child_system(system) if denested.children else {}
        for path, rows in denested.children.items():
            if not rows:  # an empty array: no rows (the parent's old ones still go)
                continue
            child = segment.children.get(path)
            if child is None:
                child = segment.children[path] = Staged(self.subtable_shape(path))
            for levels, row in rows:
                placed = self._placed(child, row, child_system)
                for column, text in keys.items():
                    child.shape.ensure(SOURCE_KEY + column, key_types[column])
                    placed[SOURCE_KEY + column] = text
                for depth, index in enumerate(levels):
                    child.shape.ensure(LEVEL.format(depth), ColumnType.BIGINT)
                    placed[LEVEL.format(depth)] = str(index)
                placed[ROW] = row_text
                staged_children.append((child, placed))
        segment.root.append(root)
        for child, placed in staged_children:
            child.append(placed)
        segment.rows += 1

    def _key_text(self, shape: TableShape, column: str, cell: tuple[Any, ColumnType]) -> str:
        value, kind = cell
        current = shape.columns.get(column)
        if (
            current is not None
            and current is not kind
            and not (current is ColumnType.NUMERIC and kind is ColumnType.BIGINT)
        ):
            raise Rejected(f"key property {column} changed type from {current.name} to {kind.name}")
        shape.ensure(column, kind)
        return self.render(kind, value)

    def _placed(
        self, staged: Staged, row: Row, system: dict[str, tuple[Any, ColumnType]]
    ) -> dict[str, str]:
        out: dict[str, str] = {}
        shape = staged.shape
        placements = self._placements
        render = self.render
        for source, (value, kind) in row.items():
            if kind is ColumnType.TIMESTAMP and parse_timestamp(str(value)) is None:
                kind = ColumnType.TEXT  # not a date-time after all: keep it, as text
            if kind is ColumnType.TEXT and "\x00" in str(value):
                raise Rejected(f"field {source} holds a NUL character, which {shape.name} cannot")
            decided = (shape.name, source, kind)
            column = placements.get(decided)
            if column is None:
                column = placements[decided] = place(shape, self.rules, source, kind)
            out[column] = render(kind, value)
        shape.ensure(BATCHED_AT, ColumnType.TIMESTAMP)  # stamped by the warehouse at load
        for column, (value, kind) in system.items():
            shape.ensure(column, SYSTEM_TYPES.get(column, kind))
            text = self._system_text.get((column, value))
            if text is None:
                text = render(kind, value)
                if column != SEQUENCE:  # few distinct values: worth remembering
                    self._system_text[(column, value)] = text
            out[column] = text
        return out

    def close(self) -> None:
        for segment in self.segments:
            segment.close()


def _natives(plans: list[Plan] | None) -> list[NativePlan] | None:
    """The plans' native forms, in order; None unless every one has one (a record must meet
    the plans in the order ``_planned`` tries them)."""
    if not plans:
        return None
    found: list[NativePlan] = []
    for plan in plans:
        native_plan: NativePlan | None = getattr(plan, "native", None)
        if native_plan is None:
            return None
        found.append(native_plan)
    return found


def _child_system(
    system: dict[str, tuple[Any, ColumnType]],
) -> dict[str, tuple[Any, ColumnType]]:
    return {k: v for k, v in system.items() if k in (RECEIVED_AT, SEQUENCE, TABLE_VERSION)}
