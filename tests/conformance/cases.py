"""The loader conformance suite's fixture batches and expected tables, warehouse-neutral.

Every loader runs every case through its own harness (see ``Harness``): load the batches in
order, then compare the tables. Expected rows list only the columns a case is about, compared as
a multiset; ``per_warehouse`` overrides an expectation where a warehouse's semantics differ
(names are given as Postgres spells them; a harness maps them with its own name rules).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

Line = dict[str, Any]
Rows = list[dict[str, Any]]


def header(
    table: str, keys: list[str], schema: dict[str, Any] | None = None, version: int | None = None
) -> Line:
    return {
        "v": 1,
        "client_id": 1,
        "table_name": table,
        "key_names": keys,
        "schema": schema,
        "table_version": version,
        "received_at": "2026-11-26T10:00:00.000000Z",
        "request_id": "conformance",
        "source": "batch" if schema else "push",
    }


def up(sequence: int, data: dict[str, Any], extracted: str | None = None) -> Line:
    line: Line = {"action": "upsert", "sequence": sequence, "data": data}
    if extracted:
        line["time_extracted"] = extracted
    return line


def activate(sequence: int) -> Line:
    return {"action": "activate_version", "sequence": sequence}


@dataclass
class Case:
    name: str
    table: str
    batches: list[list[Line]]
    expect: dict[str, Rows]  # table -> rows (only the listed columns are compared)
    rejected: int = 0
    fails_with: str | None = None  # the LAST batch must fail permanently with this in the reason
    per_warehouse: dict[str, dict[str, Rows]] = field(default_factory=dict)


class Harness(Protocol):
    warehouse: str

    def load(self, case: Case, batch_id: int, lines: list[Line]) -> None:
        """Load one batch (its lines) as the loader would; raise its error on failure."""

    def rows(self, case: Case, table: str, columns: list[str]) -> Rows: ...

    def rejected(self, case: Case) -> int: ...


LONG_A = "a" * 190 + "_first"
LONG_B = "a" * 190 + "_second"
HOSTILE_TABLE = 'orders"; DROP TABLE users; --'
# Loaded as sent, read back the same (each harness maps the names with its own rules).
HOSTILE_ROW = {
    "id": 1,
    "naïve": "ü",
    "with space": 1,
    "semi;colon": 2,
    'quo"te': 3,
    "Robert'); DROP TABLE students;--": "bobby",
    LONG_A: "first",
    LONG_B: "second",
}
# Table (and column) names that once broke a warehouse's SQL: driver placeholders, quotes,
# backslashes, the longest name a client may send, names with no ASCII at all. Each loads,
# then a second table version is activated (the full-table path).
HOSTILE_NAMES = {
    "placeholder": "x%s",
    "percent": "50% off",
    "double_percent": "two%%",
    "quotes": 'it\'s "quoted" `too`',
    "backslashes": "back\\slash\\",
    "bytes_255": "n" * 255,
    "non_ascii": "データ表",
}

CASES = [
    Case(
        "flat",
        "flat",
        [
            [
                header("flat", ["id"]),
                up(1, {"id": 1, "name": "ann", "score": 1.5, "ok": True}),
                up(2, {"id": 2, "name": "bob", "score": 2, "ok": False}),
            ]
        ],
        {
            "flat": [
                {"id": 1, "name": "ann", "score": 1.5, "ok": True, "_sdc_sequence": 1},
                {"id": 2, "name": "bob", "score": 2.0, "ok": False, "_sdc_sequence": 2},
            ]
        },
    ),
    Case(
        "text_with_line_breaks_quotes_and_delimiters",
        "texts",
        [
            [
                header("texts", ["id"]),
                up(1, {"id": 1, "s": "two\nlines", "t": 'say "hi", then\r\nleave'}),
                up(2, {"id": 2, "s": "", "t": "tab\there \\ back\\slash"}),
                up(3, {"id": 3, "s": "\n", "t": None}),
            ]
        ],
        {
            "texts": [
                {"id": 1, "s": "two\nlines", "t": 'say "hi", then\r\nleave'},
                {"id": 2, "s": "", "t": "tab\there \\ back\\slash"},
                {"id": 3, "s": "\n", "t": None},
            ]
        },
    ),
    Case(
        "nested_objects",
        "nested",
        [
            [
                header("nested", ["id"]),
                up(1, {"id": 1, "address": {"city": "Oslo", "geo": {"lat": 59.9}}}),
            ]
        ],
        {"nested": [{"id": 1, "address__city": "Oslo", "address__geo__lat": 59.9}]},
        per_warehouse={
            "snowflake": {"nested": [{"id": 1, "address": {"city": "Oslo", "geo": {"lat": 59.9}}}]},
            "bigquery": {"nested": [{"id": 1, "address": {"city": "Oslo", "geo": {"lat": 59.9}}}]},
        },
    ),
    Case(
        "arrays_of_objects",
        "orders",
        [
            [
                header("orders", ["id"]),
                up(1, {"id": 10, "lines": [{"sku": "a", "qty": 1}, {"sku": "b", "qty": 2}]}),
                up(2, {"id": 11, "lines": [{"sku": "c", "qty": 3}]}),
            ]
        ],
        {
            "orders": [{"id": 10}, {"id": 11}],
            "orders__lines": [
                {"_sdc_source_key_id": 10, "_sdc_level_0_id": 0, "sku": "a", "qty": 1},
                {"_sdc_source_key_id": 10, "_sdc_level_0_id": 1, "sku": "b", "qty": 2},
                {"_sdc_source_key_id": 11, "_sdc_level_0_id": 0, "sku": "c", "qty": 3},
            ],
        },
        per_warehouse={
            "snowflake": {
                "orders": [
                    {"id": 10, "lines": [{"sku": "a", "qty": 1}, {"sku": "b", "qty": 2}]},
                    {"id": 11, "lines": [{"sku": "c", "qty": 3}]},
                ]
            },
            "bigquery": {
                "orders": [
                    {"id": 10, "lines": [{"sku": "a", "qty": 1}, {"sku": "b", "qty": 2}]},
                    {"id": 11, "lines": [{"sku": "c", "qty": 3}]},
                ]
            },
        },
    ),
    Case(
        "arrays_of_scalars_and_replaced_children",
        "tagged",
        [
            [header("tagged", ["id"]), up(1, {"id": 1, "tags": ["x", "y"]})],
            [header("tagged", ["id"]), up(2, {"id": 1, "tags": ["z"]})],
        ],
        {"tagged__tags": [{"_sdc_source_key_id": 1, "_sdc_level_0_id": 0, "value": "z"}]},
        per_warehouse={
            "snowflake": {"tagged": [{"id": 1, "tags": ["z"]}]},
            "bigquery": {"tagged": [{"id": 1, "tags": ["z"]}]},
        },
    ),
    Case(
        "deep_nesting",
        "deep",
        [
            [
                header("deep", ["id"]),
                up(
                    1,
                    {
                        "id": 1,
                        "l1": {"l2": {"l3": {"l4": {"l5": {"l6": "deep"}}}}},
                        "grid": [[1, 2], [3]],
                    },
                ),
            ]
        ],
        {
            "deep": [{"id": 1, "l1__l2__l3__l4__l5__l6": "deep"}],
            "deep__grid__value": [
                {"_sdc_level_0_id": 0, "_sdc_level_1_id": 0, "value": 1},
                {"_sdc_level_0_id": 0, "_sdc_level_1_id": 1, "value": 2},
                {"_sdc_level_0_id": 1, "_sdc_level_1_id": 0, "value": 3},
            ],
        },
        per_warehouse={
            "snowflake": {
                "deep": [
                    {
                        "id": 1,
                        "l1": {"l2": {"l3": {"l4": {"l5": {"l6": "deep"}}}}},
                        "grid": [[1, 2], [3]],
                    }
                ]
            },
            # BigQuery has no arrays of arrays: an inner array is a RECORD with a "value" field.
            "bigquery": {
                "deep": [
                    {
                        "id": 1,
                        "l1": {"l2": {"l3": {"l4": {"l5": {"l6": "deep"}}}}},
                        "grid": [{"value": [1, 2]}, {"value": [3]}],
                    }
                ]
            },
        },
    ),
    Case(
        "type_change_splits_the_column",
        "typed",
        [
            [header("typed", ["id"]), up(1, {"id": 1, "v": 42})],
            [header("typed", ["id"]), up(2, {"id": 2, "v": "forty-two"}), up(3, {"id": 3, "v": 7})],
        ],
        {
            "typed": [
                {"id": 1, "v": 42, "v__st": None},
                {"id": 2, "v": None, "v__st": "forty-two"},
                {"id": 3, "v": 7, "v__st": None},
            ]
        },
    ),
    Case(
        "schema_types_and_new_columns_mid_stream",
        "evolving",
        [
            [
                header(
                    "evolving",
                    ["id"],
                    {
                        "properties": {
                            "id": {"type": "integer"},
                            "at": {"type": "string", "format": "date-time"},
                        }
                    },
                ),
                up(1, {"id": 1, "at": "2026-01-02T03:04:05Z"}),
            ],
            [
                header(
                    "evolving",
                    ["id"],
                    {
                        "properties": {
                            "id": {"type": "integer"},
                            "at": {"type": "string", "format": "date-time"},
                            "extra": {"type": "string"},
                        }
                    },
                ),
                up(2, {"id": 2, "at": "not a date", "extra": "new"}),
            ],
        ],
        {
            "evolving": [
                {"id": 1, "extra": None, "at__st": None},
                {"id": 2, "extra": "new", "at__st": "not a date"},
            ]
        },
    ),
    Case(
        "key_names_change_rekeys_when_rows_allow",
        "rekeyed",
        [
            [header("rekeyed", ["id"]), up(1, {"id": 1, "region": "eu", "v": "a"})],
            [header("rekeyed", ["id", "region"]), up(2, {"id": 1, "region": "us", "v": "b"})],
        ],
        {"rekeyed": [{"id": 1, "region": "eu", "v": "a"}, {"id": 1, "region": "us", "v": "b"}]},
    ),
    Case(
        "key_names_change_parks_when_rows_do_not_allow",
        "unkeyable",
        [
            [header("unkeyable", []), up(1, {"code": "x"}), up(2, {"code": "x"})],
            [header("unkeyable", ["code"]), up(3, {"code": "y"})],
        ],
        {"unkeyable": [{"code": "x"}, {"code": "x"}]},
        fails_with="cannot be re-keyed",
    ),
    Case(
        "hostile_and_unicode_names",
        HOSTILE_TABLE,
        [
            [
                header(HOSTILE_TABLE, ["id"]),
                up(1, HOSTILE_ROW),
            ]
        ],
        {HOSTILE_TABLE: [HOSTILE_ROW]},
    ),
    *[
        Case(
            f"hostile_name_{label}",
            name,
            [
                [
                    header(name, ["id"], version=1),
                    up(1, {"id": 1, name: "a", "%s": "b"}),
                    up(2, {"id": 2, name: "c", "%s": "d"}),
                    activate(3),
                ],
                [
                    header(name, ["id"], version=2),
                    up(4, {"id": 2, name: "e", "%s": "f"}),
                    activate(5),
                ],
            ],
            {name: [{"id": 2, name: "e", "%s": "f", "_sdc_table_version": 2}]},
        )
        for label, name in HOSTILE_NAMES.items()
    ],
    Case(
        "nulls",
        "nullable",
        [
            [
                header("nullable", ["id"]),
                up(1, {"id": 1, "a": "x", "b": None}),
                up(2, {"id": 2, "a": None, "b": None}),
            ]
        ],
        {"nullable": [{"id": 1, "a": "x"}, {"id": 2, "a": None}]},
    ),
    Case(
        "out_of_order_sequences",
        "ordered",
        [
            [
                header("ordered", ["id"]),
                up(5, {"id": 1, "v": "newest"}),
                up(7, {"id": 2, "v": "b7"}),
                up(6, {"id": 2, "v": "b6"}),
            ],
            [
                header("ordered", ["id"]),
                up(3, {"id": 1, "v": "older, arrived late"}),
                up(7, {"id": 2, "v": "tie: later wins"}),
            ],
        ],
        {
            "ordered": [
                {"id": 1, "v": "newest", "_sdc_sequence": 5},
                {"id": 2, "v": "tie: later wins", "_sdc_sequence": 7},
            ]
        },
    ),
    Case(
        "activate_version",
        "full",
        [
            [
                header("full", ["id"], version=1),
                up(1, {"id": 1}),
                up(2, {"id": 2}),
                up(3, {"id": 3}),
                activate(4),
            ],
            [header("full", ["id"], version=2), up(5, {"id": 2}), up(6, {"id": 3}), activate(7)],
        ],
        {"full": [{"id": 2, "_sdc_table_version": 2}, {"id": 3, "_sdc_table_version": 2}]},
    ),
    Case(
        "append_only_resent_request",
        "events",
        [
            [
                header("events", []),
                up(100, {"kind": "click", "n": 1}),
                up(101, {"kind": "view", "n": 2}),
            ],
            [
                header("events", []),
                up(100, {"kind": "click", "n": 1}),
                up(101, {"kind": "view", "n": 2}),
                up(102, {"kind": "click", "n": 1}),
            ],
        ],
        {
            "events": [
                {"kind": "click", "n": 1},
                {"kind": "view", "n": 2},
                {"kind": "click", "n": 1},
            ]
        },
    ),
    Case(
        "big_integers_stay_exact",
        "big",
        [[header("big", ["id"]), up(1, {"id": 1, "n": 5}), up(2, {"id": 2, "n": 2**70 + 1})]],
        {"big": [{"id": 1, "n": 5}, {"id": 2, "n": 2**70 + 1}]},
        # Redshift cannot change a column's type in place: the wider integer is split off.
        per_warehouse={
            "redshift": {
                "big": [{"id": 1, "n": 5, "n__de": None}, {"id": 2, "n": None, "n__de": 2**70 + 1}]
            },
            # BigQuery keeps INT64 columns: the wider integer goes to a BIGNUMERIC sibling.
            "bigquery": {
                "big": [{"id": 1, "n": 5, "n__nu": None}, {"id": 2, "n": None, "n__nu": 2**70 + 1}]
            },
        },
    ),
    Case(
        "unloadable_records_go_to_sdc_rejected",
        "rejecting",
        [
            [
                header("rejecting", ["id"]),
                up(1, {"id": 1, "s": "fine"}),
                up(2, {"id": 2, "s": "nul\u0000byte"}),
                up(3, {"id": "3", "s": "key changed type"}),
            ]
        ],
        {"rejecting": [{"id": 1, "s": "fine"}]},
        rejected=2,
    ),
    Case(
        "time_extracted_and_system_columns",
        "stamped",
        [[header("stamped", ["id"]), up(9, {"id": 1}, extracted="2026-11-25T08:00:00Z")]],
        {"stamped": [{"id": 1, "_sdc_sequence": 9}]},
    ),
]
