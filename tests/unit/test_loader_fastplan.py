"""The compiled record plans (services/loaders/core/fastplan.py) stage exactly what the general
path stages: the same rows, columns, splits, widenings and rejections, for generated batches
whose records repeat shapes (so plans are compiled and used) and stray from them in every way a
plan must notice."""

from __future__ import annotations

import csv
import gzip
import io
import os
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.wire import Header, dumps
from services.loaders.core import fastplan, native, reader
from services.loaders.core.plan import PlanBuilder
from services.loaders.core.reader import batch_events, events
from services.loaders.core.shape import TableShape
from services.loaders.core.types import ColumnType, parse_timestamp
from services.loaders.postgres import statements as postgres
from services.loaders.postgres.warehouse import plan_builder
from services.loaders.redshift import statements as redshift

SCHEMA = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "at": {"type": "string", "format": "date-time"},
        "amount": {"type": "number"},
        "nest": {
            "type": "object",
            "properties": {"when": {"type": "string", "format": "date-time"}},
        },
    },
}

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**31), max_value=2**31),
    st.sampled_from([2**63 - 1, -(2**63), 2**63, 2**64 + 1, -(2**63) - 1, 10**30]),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([1e19, -9.3e18, 0.1, 2.5, 1e16, 1e-05, -0.0]),
    st.sampled_from(
        ["2026-11-26T10:00:00Z", "2026-11-26 10:00:00+01:00", "not a date", "", 'a "quoted", one']
    ),
    st.sampled_from(
        [
            "2024-02-29T23:59:59.5+05:30",
            "2026-02-29T10:00:00Z",
            "2026-11-26",
            "2026-11-26T10:00",
            "2026-11-26T10:00:00.1234567",
            "2026-11-26T24:00:00",
            "0000-01-01",
        ]
    ),
    st.text(max_size=6),
    st.sampled_from(["nul \x00 inside", "x" * 70000]),
)
names = st.sampled_from(["id", "at", "amount", "s", "a__b", "nest", "Flag", "_sdc_sequence"])
leaf_or_object = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.dictionaries(st.sampled_from(["when", "b", "c"]), inner, max_size=3),
        st.lists(inner, max_size=2),
    ),
    max_leaves=4,
)
shapes = st.dictionaries(names, leaf_or_object, min_size=1, max_size=5)


def _header(draw: Any, keyed: bool) -> bytes:
    """A batch header line: keyed on ``id`` or append-only, with or without a schema and a
    table version, at one of two received times."""
    return Header(
        1,
        "t",
        ("id",) if keyed else (),
        SCHEMA if draw(st.booleans()) else None,
        draw(st.sampled_from([None, 7])),
        draw(st.sampled_from(["2026-11-26T10:00:00.000000Z", "2026-11-26T11:00:00Z"])),
        "r",
        "batch",
    ).encode()


@st.composite
def batches(draw: Any) -> list[bytes]:
    """Batch object lines: headers and records, most records repeating a few shapes."""
    pool = draw(st.lists(shapes, min_size=1, max_size=4))
    lines: list[bytes] = []
    sequence = 0
    for _ in range(draw(st.integers(1, 3))):
        keyed = draw(st.booleans())
        lines.append(_header(draw, keyed))
        for _ in range(draw(st.integers(1, 25))):
            sequence += 1
            if draw(st.integers(0, 30)) == 0:
                lines.append(dumps({"action": "activate_version", "sequence": sequence}))
                continue
            base = dict(draw(st.sampled_from(pool)))
            if draw(st.integers(0, 3)) == 0:  # the same shape with other values of its types
                base = {k: _like(v, sequence) for k, v in base.items()}
            if keyed and draw(st.integers(0, 3)):  # mostly a key, so plans are compiled
                base["id"] = sequence
            record: dict[str, Any] = {"action": "upsert", "sequence": sequence, "data": base}
            if draw(st.booleans()):
                record["time_extracted"] = "2026-11-26T09:00:00Z"
            lines.append(dumps(record))
    return lines


def _like(value: Any, n: int) -> Any:
    if type(value) is int and abs(value) < 2**31:
        return value + n
    if type(value) is str:
        return f"{value}{n}" if n % 2 else f'{value}"{n}'  # quotes: plain and not
    if type(value) is float:
        return value + n / 8
    if isinstance(value, dict):
        return {k: _like(v, n) for k, v in value.items()}
    return value


def _staged(builder: PlanBuilder) -> list[Any]:
    out: list[Any] = []
    for segment in builder.segments:
        tables = [("root", segment.root), *sorted(segment.children.items())]
        out.append(
            (
                segment.key_names,
                segment.key_columns,
                segment.rows,
                segment.activate_version,
                [
                    (path, staged.order, b"".join(staged.spill.text(len(staged.order))))
                    for path, staged in tables
                ],
            )
        )
    out.append([(r.record, r.reason) for r in builder.rejected])
    out.append({n: (s.columns, s.added, s.widened) for n, s in sorted(builder.shapes.items())})
    return out


def _existing() -> dict[str, TableShape]:
    return {"t": TableShape("t", {"amount": ColumnType.TEXT, "Flag": ColumnType.BOOLEAN}, True)}


BATCHED_AT = '"2026-11-26T12:00:00.123456+00:00"'
# name -> (rules, render, inline, PlanBuilder options), as each loader builds its plans
WAREHOUSES: dict[str, tuple[Any, Any, Any, dict[str, Any]]] = {
    "postgres": (
        postgres.RULES,
        postgres.render,
        postgres.INLINE,
        {"implicit_row": True, "batched_at": BATCHED_AT, "plain_inline": postgres.PLAIN_INLINE},
    ),
    "redshift": (redshift.RULES, redshift.render, {}, {}),
}


@pytest.mark.parametrize("name", sorted(WAREHOUSES))
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lines=batches())
def test_compiled_plans_stage_exactly_what_the_general_path_stages(
    name: str, lines: list[bytes]
) -> None:
    rules, render, inline, options = WAREHOUSES[name]
    results = []
    for compiled in (False, True):
        builder = PlanBuilder(
            "t", rules, render, _existing(), inline=inline, compiled=compiled, **options
        )
        try:
            for event in events(lines):
                builder.feed(event)
            results.append(_staged(builder))
        finally:
            builder.close()
    assert results[0] == results[1]


def test_plans_are_compiled_and_used_for_repeated_shapes() -> None:
    header = Header(1, "t", ("id",), None, None, "2026-11-26T10:00:00Z", "r", "push")
    lines = [header.encode()] + [
        orjson.dumps(
            {"action": "upsert", "sequence": i, "data": {"id": i, "v": "x", "o": {"p": 1.5}}}
        )
        for i in range(1, 101)
    ]
    builder = PlanBuilder(
        "t", postgres.RULES, postgres.render, {}, inline=postgres.INLINE, batched_at=BATCHED_AT
    )
    for event in events(lines):
        builder.feed(event)
    (plans,) = builder.segments[0].plans.values()
    assert len(plans) == 1  # one shape, one plan
    staged = builder.segments[0].root
    text = b"".join(staged.spill.text(len(staged.order))).decode().splitlines()
    assert len(text) == 100 and builder.segments[0].rows == 100
    row = dict(zip(staged.order, text[-1].split(","), strict=True))
    got = (row["id"], row["v"], row["o__p"], row["_sdc_sequence"], row["_sdc_batched_at"])
    assert got == ("100", '"x"', "1.5", "100", BATCHED_AT)
    builder.close()


def test_tables_of_one_shape_share_a_compiled_plan_and_each_stages_its_own_fields() -> None:
    """Two clients' tables whose records share a shape under other field names: the second
    load compiles nothing (the code object is shared) yet stages its own values and names."""

    def staged_rows(table: str, names: tuple[str, str]) -> list[dict[str, str]]:
        header = Header(1, table, (names[0],), None, None, "2026-11-26T10:00:00Z", "r", "push")
        lines = [header.encode()] + [
            orjson.dumps(
                {"action": "upsert", "sequence": i, "data": {names[0]: i, names[1]: f"{table}{i}"}}
            )
            for i in range(1, 4)
        ]
        builder = plan_builder(table, {}, BATCHED_AT)
        try:
            for event in events(lines):
                builder.feed(event)
            staged = builder.segments[0].root
            text = b"".join(staged.spill.text(len(staged.order))).decode().splitlines()
            return [dict(zip(staged.order, line.split(","), strict=True)) for line in text]
        finally:
            builder.close()

    first = staged_rows("orders", ("id", "note"))
    compiled = fastplan._compiled.cache_info()
    second = staged_rows("users", ("uid", "name"))
    after = fastplan._compiled.cache_info()
    assert (after.misses, after.hits) == (compiled.misses, compiled.hits + 1)
    assert [(r["id"], r["note"]) for r in first] == [
        ("1", '"orders1"'),
        ("2", '"orders2"'),
        ("3", '"orders3"'),
    ]
    assert [(r["uid"], r["name"]) for r in second] == [
        ("1", '"users1"'),
        ("2", '"users2"'),
        ("3", '"users3"'),
    ]
    assert "id" not in second[0] and "uid" not in first[0]


def test_a_plan_doubles_quotes_only_in_records_that_hold_a_backslash() -> None:
    """A plain record (no backslash in its line) renders without quote doubling; a record
    whose strings hold a quote, a newline or an escaped character renders as ``render`` does."""
    header = Header(1, "t", ("id",), None, None, "2026-11-26T10:00:00Z", "r", "push")
    # The first goes the general way (and compiles the plan); the others through the plan.
    values = ["plain", "plain too", 'a "quoted" one', "two\nlines", "tab\t", "caf\u00e9", '\\"']
    lines = [header.encode()] + [
        orjson.dumps({"action": "upsert", "sequence": i, "data": {"id": i, "v": v}})
        for i, v in enumerate(values, start=1)
    ]
    builder = plan_builder("t", {}, BATCHED_AT)  # as the Postgres loader stages them
    for event in events(lines):
        builder.feed(event)
    (plans,) = builder.segments[0].plans.values()
    assert "if plain:" in plans[0].source  # type: ignore[attr-defined]
    staged = builder.segments[0].root
    text = b"".join(staged.spill.text(len(staged.order))).decode()
    v_at = staged.order.index("v")
    rows = list(csv.reader(io.StringIO(text)))
    assert [row[v_at] for row in rows] == values
    fields = [line.split(",")[v_at] for line in text.splitlines()[:3]]
    assert fields == ['"plain"', '"plain too"', '"a ""quoted"" one"']
    builder.close()


def test_spill_lines_may_hold_newlines_and_are_padded_to_the_final_width() -> None:
    from services.loaders.core.spill import Spill

    spill = Spill()
    spill.append(["1", '"two\nlines"'])
    spill.append_line('3,"x",""', 3)
    spill.append(["4", '"crlf\r\n"'])
    assert b"".join(spill.text(3)) == b'1,"two\nlines",\n3,"x",""\n4,"crlf\r\n",\n'
    assert len(spill) == 3
    spill.close()


def test_implicit_row_numbers_children_by_their_parents_line() -> None:
    header = Header(1, "t", ("id",), None, None, "2026-11-26T10:00:00Z", "r", "push")
    lines = [header.encode()] + [
        orjson.dumps({"action": "upsert", "sequence": i, "data": {"id": i, "xs": [i, i + 1]}})
        for i in (1, 2, 3)
    ]
    builder = PlanBuilder("t", postgres.RULES, postgres.render, {}, implicit_row=True)
    for event in events(lines):
        builder.feed(event)
    segment = builder.segments[0]
    assert "_sdc_row" not in segment.root.order
    child = segment.children["xs"]
    text = b"".join(child.spill.text(len(child.order))).decode().splitlines()
    rows = [dict(zip(child.order, line.split(","), strict=True)) for line in text]
    assert [(r["value"], r["_sdc_row"]) for r in rows] == [
        ("1", "1"),
        ("2", "1"),
        ("2", "2"),
        ("3", "2"),
        ("3", "3"),
        ("4", "3"),
    ]
    builder.close()


# -- the plans run natively (services/loaders/core/native.py, decision 12)

needs_native = pytest.mark.skipif(
    not native.available(), reason="skein_loader_native is not built here (no cargo)"
)


def test_the_native_plans_are_built_where_ci_requires_them() -> None:
    if os.environ.get("SKEIN_REQUIRE_NATIVE"):
        assert native.available(), "make install did not build services/loaders/native"


def _fresh(draw: Any, like: Any) -> Any:
    """Another value of ``like``'s JSON type (objects keep their keys), now and then one a plan
    must refuse (out of range, not a date-time)."""
    if isinstance(like, dict):
        return {k: _fresh(draw, v) for k, v in like.items()}
    if like is None or type(like) is bool:
        return draw(st.sampled_from([like, None])) if like is None else draw(st.booleans())
    if type(like) is int:
        return draw(st.one_of(st.integers(-(2**40), 2**40), st.sampled_from([2**63, -(2**63)])))
    if type(like) is float:
        return draw(st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.just(1e19)))
    return draw(st.one_of(st.text(max_size=5), scalars.filter(lambda v: type(v) is str)))


plain_shapes = st.dictionaries(
    names,
    st.recursive(
        scalars.filter(lambda v: type(v) is not str or len(v) < 100),
        lambda inner: st.dictionaries(st.sampled_from(["when", "b", "c"]), inner, max_size=3),
        max_leaves=4,
    ),
    min_size=1,
    max_size=5,
)
# Lines a native plan must leave to Python, written by hand: duplicate keys, another envelope.
ODD_LINES = [
    b'{"action":"upsert","sequence":%d,"data":{"id":%d,"id":"x"}}',
    b'{"action":"upsert","sequence":%d,"data":{"id":%d},"extra":1}',
    b'{"action":"upsert","sequence":%d.5,"data":{"id":%d}}',
    b'{"action":"upsert","sequence":%d,"data":{"id":%d},"time_extracted":""}',
    b'{"action":"upsert","sequence":%d,"data":{"id":%d},"time_extracted":null}',
    b'{"action":"upsert","sequence":%d,"data":{"id":%d,"at":"2026-11-26T10:00:00Z"} }',
    b'{"action":"upsert","sequence":%d,"data":{"id":%d,"amount":-0}}',  # orjson: the int 0
    b'{"action":"upsert","sequence":%d,"data":{"id":%d,"amount":-0.0}}',
    b'{"action":"upsert","sequence":%d,"data":{"id":%d,"time_extracted":"x"}}',
]


@st.composite
def plannable_batches(draw: Any) -> list[bytes]:
    """Batch object lines whose records mostly repeat a few shapes a plan takes (no arrays, a
    key), with values drawn afresh for each record, and now and then an odd line."""
    pool = [{**shape, "id": 1} for shape in draw(st.lists(plain_shapes, min_size=1, max_size=3))]
    lines: list[bytes] = []
    sequence = 0
    for _ in range(draw(st.integers(1, 2))):
        lines.append(_header(draw, keyed=True))
        for _ in range(draw(st.integers(1, 40))):
            sequence += 1
            if draw(st.integers(0, 40)) == 0:
                lines.append(draw(st.sampled_from(ODD_LINES)) % (sequence, sequence))
                continue
            data = _fresh(draw, draw(st.sampled_from(pool)))
            data["id"] = sequence
            record: dict[str, Any] = {"action": "upsert", "sequence": sequence, "data": data}
            if draw(st.integers(0, 3)) == 0:
                record["time_extracted"] = "2026-11-26T09:00:00Z"
            lines.append(dumps(record))
    return lines


@needs_native
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lines=st.one_of(batches(), plannable_batches()))
def test_native_plans_stage_exactly_what_the_python_plans_stage(lines: list[bytes]) -> None:
    results = []
    body = gzip.compress(b"\n".join(lines), 1)
    # Lines read one by one; the text handed over (in blocks cut every ~300 bytes here, so
    # segments and runs of one shape cross them); and fed a few lines at a time.
    for text, limit in ((False, None), (True, None), (True, 3)):
        builder = plan_builder("t", _existing(), BATCHED_AT)  # as the Postgres loader stages
        try:
            with pytest.MonkeyPatch.context() as patch:
                patch.setattr(reader, "TEXT_BYTES", 300)
                for event in batch_events([body], text=text):
                    if isinstance(event, reader.RecordText) and limit:
                        start = event.start
                        while start < event.end:
                            start = builder.feed_text(event.text, start, event.end, limit)
                    else:
                        builder.feed(event)
            results.append(_staged(builder))
        finally:
            builder.close()
    assert results[0] == results[1] == results[2]


@needs_native
def test_native_plans_take_the_lines_of_known_shapes(monkeypatch: pytest.MonkeyPatch) -> None:
    """A run of one shape: the first record goes the general way and compiles the plan, the
    rest are staged natively; a line with a backslash, Python's; then natively again."""
    taken: list[int] = []
    stage = native.stage

    def counted(*args: Any) -> Any:
        result = stage(*args)
        taken.append(result[3])
        return result

    monkeypatch.setattr(native, "stage", counted)
    header = Header(1, "t", ("id",), SCHEMA, 7, "2026-11-26T10:00:00Z", "r", "push")
    data = [
        {"id": i, "at": f"2026-11-26T10:00:{i % 60:02}Z", "amount": i / 4, "o": {"p": i % 2 == 0}}
        for i in range(1, 201)
    ]
    data[99]["o"] = {"p": False, "q": "a \\ backslash"}  # another shape, not plain: Python's
    lines = [header.encode()] + [
        orjson.dumps({"action": "upsert", "sequence": i, "data": d})
        for i, d in enumerate(data, start=1)
    ]
    builder = plan_builder("t", {}, BATCHED_AT)
    for event in batch_events([gzip.compress(b"\n".join(lines), 1)], text=True):
        builder.feed(event)
    assert sum(taken) == 198  # all but the first and the one with a backslash
    staged = builder.segments[0].root
    rows = list(csv.reader(io.StringIO(b"".join(staged.spill.text(len(staged.order))).decode())))
    assert len(rows) == 200 and builder.segments[0].rows == 200
    row = dict(zip(staged.order, rows[149], strict=True))
    assert (row["id"], row["at"], row["amount"], row["o__p"]) == (
        "150",
        "2026-11-26T10:00:30Z",
        "37.5",
        "true",
    )
    assert row["_sdc_sequence"] == "150" and row["_sdc_table_version"] == "7"
    builder.close()


@needs_native
@given(st.floats(allow_nan=False, allow_infinity=False))
def test_native_floats_are_written_as_python_writes_them(value: float) -> None:
    import skein_loader_native

    assert skein_loader_native.float_repr(value) == repr(value)


iso_parts = st.tuples(
    st.integers(0, 10000),
    st.integers(0, 13),
    st.integers(0, 32),
    st.sampled_from(["", "T", " ", "t", "x"]),
    st.integers(0, 25),
    st.integers(0, 61),
    st.integers(0, 61),
    st.sampled_from(["", ".", ".1", ".123456", ".1234567", ",5"]),
    st.sampled_from(["", "Z", "+05:30", "-23:59", "+24:00", "+05", "z", "+05:30:00"]),
)


@needs_native
@given(parts=iso_parts, cut=st.integers(0, 40))
def test_native_date_times_are_a_subset_of_pythons(parts: tuple[Any, ...], cut: int) -> None:
    import skein_loader_native

    year, month, day, sep, hour, minute, second, fraction, zone = parts
    text = f"{year:04}-{month:02}-{day:02}{sep}{hour:02}:{minute:02}:{second:02}{fraction}{zone}"
    for candidate in (text, text[:cut], f"{year:04}-{month:02}-{day:02}"):
        if skein_loader_native.takes_datetime(candidate):
            assert parse_timestamp(candidate) is not None, candidate
    if (
        sep in ("T", " ")
        and fraction not in (".", ".1234567", ",5")
        and zone in ("", "Z", "+05:30")
    ):
        expected = parse_timestamp(text) is not None
        assert skein_loader_native.takes_datetime(text) == expected, text


@needs_native
def test_native_plans_leave_odd_numbers_to_python() -> None:
    """``-0`` is the int 0 to orjson but a negative zero to serde_json; ``-0.0`` is a float to
    both. Each line stages as the Python plans stage it."""
    header = Header(1, "t", ("id",), None, None, "2026-11-26T10:00:00Z", "r", "push")
    lines = [
        header.encode(),
        b'{"action":"upsert","sequence":1,"data":{"id":1,"x":1.5,"o":{"p":2.5}}}',
        b'{"action":"upsert","sequence":2,"data":{"id":2,"x":-0,"o":{"p":-0}}}',
        b'{"action":"upsert","sequence":3,"data":{"id":3,"x":-0.0,"o":{"p":0.0}}}',
        b'{"action":"upsert","sequence":4,"data":{"id":-0,"x":2.0,"o":{"p":1e-400}}}',
    ]
    results = []
    for text in (False, True):
        builder = plan_builder("t", {}, BATCHED_AT)
        for event in batch_events([gzip.compress(b"\n".join(lines), 1)], text=text):
            builder.feed(event)
        results.append(_staged(builder))
        builder.close()
    assert results[0] == results[1]
