"""Runs a conformance case through any harness and checks the outcome."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest

from tests.conformance.cases import Case, Harness


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
