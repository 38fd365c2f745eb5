"""Runs a conformance case through any harness and checks the outcome; what every harness
needs to get there: the cases as pytest parameters, a case's lines as the loader reads them."""

from __future__ import annotations

import gzip
import json
from collections import Counter
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from common.wire import dumps
from services.loaders.core.reader import Event, batch_events
from tests.conformance.cases import CASES, Case, Harness, Line


def to_events(lines: list[Line], text: bool = False) -> Iterator[Event]:
    """The events the loader's batch reader yields for these lines: each line read, or with
    ``text`` (as the runner reads for a warehouse whose plans run natively) the record lines
    handed over unread."""
    body = gzip.compress(b"\n".join(dumps(line) for line in lines), 1)
    return batch_events([body], text=text)


def case_params(
    skip: Mapping[str, str] | None = None, xfail: Mapping[str, str] | None = None
) -> list[pytest.ParameterSet]:
    """Every case as a parameter named after it. A case a warehouse (or its stand-in) cannot
    show is skipped, or expected to fail strictly (it must pass once the gap closes), with the
    reason its name maps to."""
    skip, xfail = skip or {}, xfail or {}
    params = []
    for case in CASES:
        marks = []
        if case.name in skip:
            marks.append(pytest.mark.skip(reason=skip[case.name]))
        if case.name in xfail:
            marks.append(pytest.mark.xfail(strict=True, reason=xfail[case.name]))
        params.append(pytest.param(case, marks=marks, id=case.name))
    return params


def _frozen(row: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted((k, _normal(v)) for k, v in row.items()))


def _normal(value: Any) -> Any:
    # Numbers compare by value whatever their warehouse type (bigint, numeric, double).
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, dict | list):  # nesting kept (VARIANT): compare as canonical JSON
        return json.dumps(value, sort_keys=True)
    try:
        as_float = float(value)
    except (TypeError, ValueError):
        return value
    return int(value) if as_float.is_integer() and abs(as_float) < 2**53 else str(value)


def run_case(harness: Harness, case: Case, error_types: tuple[type[BaseException], ...]) -> None:
    for number, lines in enumerate(case.batches, start=1):
        last = number == len(case.batches)
        if last and case.fails_with:
            with pytest.raises(error_types) as failure:
                harness.load(case, number, lines)
            assert case.fails_with in str(failure.value)
        else:
            harness.load(case, number, lines)
    expected = case.per_warehouse.get(harness.warehouse, case.expect)
    for table, rows in expected.items():
        columns = sorted({c for row in rows for c in row})
        got = harness.rows(case, table, columns)
        assert Counter(map(_frozen, got)) == Counter(map(_frozen, rows)), (table, got)
    assert harness.rejected(case) == case.rejected
