"""The compiled record plans (services/loaders/core/fastplan.py) stage exactly what the general
path stages: the same rows, columns, splits, widenings and rejections, for generated batches
whose records repeat shapes (so plans are compiled and used) and stray from them in every way a
plan must notice."""

from __future__ import annotations

import csv
import io
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.wire import Header, dumps
from services.loaders.core.plan import PlanBuilder
from services.loaders.core.reader import events
from services.loaders.core.shape import TableShape
from services.loaders.core.types import ColumnType
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
    st.sampled_from([1e19, -9.3e18, 0.1, 2.5]),
    st.sampled_from(
        ["2026-11-26T10:00:00Z", "2026-11-26 10:00:00+01:00", "not a date", "", 'a "quoted", one']
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


@st.composite
def batches(draw: Any) -> list[bytes]:
    """Batch object lines: headers and records, most records repeating a few shapes."""
    pool = draw(st.lists(shapes, min_size=1, max_size=4))
    lines: list[bytes] = []
    sequence = 0
    for _ in range(draw(st.integers(1, 3))):
        keyed = draw(st.booleans())
        header = Header(
            1,
            "t",
            ("id",) if keyed else (),
            SCHEMA if draw(st.booleans()) else None,
            draw(st.sampled_from([None, 7])),
            draw(st.sampled_from(["2026-11-26T10:00:00.000000Z", "2026-11-26T11:00:00Z"])),
            "r",
            "batch",
        )
        lines.append(header.encode())
        for _ in range(draw(st.integers(1, 25))):
            sequence += 1
            if draw(st.integers(0, 30)) == 0:
                lines.append(dumps({"action": "activate_version", "sequence": sequence}))
                continue
            base = dict(draw(st.sampled_from(pool)))
            if draw(st.integers(0, 3)) == 0:  # the same shape with other values of its types
                base = {k: _like(v, sequence) for k, v in base.items()}
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
