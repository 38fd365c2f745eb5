"""The loader core's pure mapping: names, types, de-nesting, column placement, plans."""

from __future__ import annotations

import gzip
from dataclasses import replace
from itertools import pairwise
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.wire import Header
from services.loaders.core import destination_cache, reader
from services.loaders.core.denest import denest, flat_row, is_flat, nested_row
from services.loaders.core.errors import PermanentError
from services.loaders.core.names import NameRules
from services.loaders.core.plan import PlanBuilder
from services.loaders.core.reader import Record, events, lines_of
from services.loaders.core.shape import ColumnLimit, TableShape, place
from services.loaders.core.system_columns import PRIMARY_KEY, append_only_key
from services.loaders.core.types import ColumnType as T
from services.loaders.core.types import schema_type, value_type

PG = NameRules(max_bytes=63)


def test_names_that_fit_are_kept_and_others_get_a_stable_hash_suffix() -> None:
    assert PG.column("naïve name; ok") == "naïve name; ok"
    a, b = PG.column("x" * 100 + "a"), PG.column("x" * 100 + "b")
    assert a != b and len(a.encode()) <= 59 and len(b.encode()) <= 59
    assert PG.column("x" * 100 + "a") == a  # stable
    upper = NameRules(max_bytes=255, case="upper")
    assert upper.column("id") == "ID"  # lowercase JSON names fold plainly (Snowflake shows ID)
    assert upper.column("naïve") == "NAÏVE"
    assert len({upper.column(n) for n in ("id", "Id", "ID")}) == 3  # collide after folding
    assert upper.column("Id").startswith("ID_")
    assert upper.column("ß") != upper.column("ss")  # "ß".upper() == "SS": not plain
    lower = NameRules(max_bytes=127, case="lower")
    assert lower.column("id") == "id"
    assert lower.column("Id") != lower.column("id") and lower.column("Id").startswith("id_")


def test_multibyte_names_are_truncated_on_character_boundaries() -> None:
    name = PG.column("é" * 80)
    assert len(name.encode()) <= 59
    name.encode().decode("utf-8")  # valid UTF-8


ROOTS = ["t", "a" * 52, "a" * 53, "a" * 60, "a" * 60 + "b", "a" * 63, "a" * 64, "é" * 30]
ROOTS += ["x" * 200, "x" * 199 + "y", "Orders", "50% off_\\ x", "Ünïcødé ☃ 表" * 4]
PATHS = ["items", "b", "items__tags", "Items", "z" * 100]


@pytest.mark.parametrize(
    "rules", [PG, NameRules(max_bytes=127, case="lower")], ids=["postgres", "redshift"]
)
def test_subtable_names_fit_and_tell_whose_they_are(rules: NameRules) -> None:
    for root in ROOTS:
        for path in PATHS:
            name = rules.subtable(root, path)
            assert len(name.encode()) <= rules.max_bytes
            assert rules.subtable(root, path) == name  # stable
            assert name.startswith(rules.subtable_prefix(root))
            assert rules.subtable_of(name, root), (root, path, name)
            others = [r for r in ROOTS if r != root]
            assert not any(rules.subtable_of(name, other) for other in others), (root, name)
            assert name not in {rules.table(r) for r in ROOTS}
        names = {rules.subtable(root, path) for path in PATHS}
        assert len(names) == len(PATHS)
        assert not rules.subtable_of(rules.table(root), root)


def test_subtable_names_of_roots_that_show_whole_are_unchanged() -> None:
    for root, path in [("t", "items"), ("a" * 52, "z" * 100), ("a" * 60, "b")]:
        assert PG.subtable(root, path) == PG.table(f"{root}__{path}")
    long_name = PG.subtable("a" * 60, "items")  # "<root>__items" is 67 bytes
    assert long_name != PG.table("a" * 60 + "__items") and len(long_name.encode()) == 63
    assert PG.subtable_prefix("t") == "t__" and PG.subtable_prefix("a" * 60) == "a" * 46


def test_a_long_roots_subtable_named_before_the_roots_hash_keeps_its_name() -> None:
    root = "r" * 60
    earlier = PG.table(f"{root}__items")
    shapes = {earlier: TableShape(earlier, {"v": T.TEXT}, exists=True)}
    builder = PlanBuilder(root, PG, lambda kind, value: str(value), shapes)
    assert not builder.is_subtable(earlier)  # its name does not tell whose it is
    builder.feed(_header(("id",)))
    builder.feed(_rec(1, {"id": 1, "items": [{"v": "x"}], "tags": ["y"]}))
    children = builder.segments[0].children
    assert children["items"].shape is shapes[earlier]
    assert children["tags"].shape.name == PG.subtable(root, "tags") != PG.table(f"{root}__tags")
    assert builder.is_subtable(earlier) and builder.is_subtable(children["tags"].shape.name)
    builder.close()


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        ("x", T.TEXT),
        (True, T.BOOLEAN),
        (1, T.BIGINT),
        (2**64, T.NUMERIC),
        (1.5, T.DOUBLE),
        (None, None),
    ],
)
def test_value_types(value: object, kind: T | None) -> None:
    assert value_type(value) is kind


def test_schema_types() -> None:
    assert schema_type({"type": ["null", "integer"]}) is T.BIGINT
    assert schema_type({"type": "string", "format": "date-time"}) is T.TIMESTAMP
    assert schema_type({"type": ["string", "integer"]}) is None


def test_denest_objects_and_arrays() -> None:
    d = denest(
        {"id": 1, "a": {"b": {"c": "x"}}, "tags": ["t", "u"], "items": [{"k": 1, "sub": [True]}]},
        None,
    )
    assert d.root == {"id": (1, T.BIGINT), "a__b__c": ("x", T.TEXT)}
    assert d.children["tags"] == [
        ((0,), {"value": ("t", T.TEXT)}),
        ((1,), {"value": ("u", T.TEXT)}),
    ]
    assert d.children["items"] == [((0,), {"k": (1, T.BIGINT)})]
    assert d.children["items__sub"] == [((0, 0), {"value": (True, T.BOOLEAN)})]


def test_declared_type_is_used_only_when_the_value_fits_it() -> None:
    props = {
        "n": {"type": "number"},
        "s": {"type": "string"},
        "at": {"type": "string", "format": "date-time"},
    }
    row = flat_row({"n": 3, "s": 5, "at": "2026-01-01T00:00:00Z"}, props)
    assert row == {
        "n": (3, T.DOUBLE),
        "s": (5, T.BIGINT),
        "at": ("2026-01-01T00:00:00Z", T.TIMESTAMP),
    }
    assert is_flat({"a": 1}) and not is_flat({"a": [1]})


def test_place_splits_widens_and_limits() -> None:
    shape = TableShape("t", {"v": T.BIGINT, "n": T.BIGINT}, exists=True)
    assert place(shape, PG, "v", T.TEXT) == "v__st"
    assert place(shape, PG, "v", T.BIGINT) == "v"
    assert place(shape, PG, "n", T.NUMERIC) == "n" and shape.widened == {"n": T.NUMERIC}
    assert shape.added == {"v__st": T.TEXT}
    tiny = NameRules(max_bytes=63, max_columns=2)
    with pytest.raises(ColumnLimit):
        place(TableShape("t", {"a": T.TEXT, "b": T.TEXT}), tiny, "c", T.TEXT)


def test_append_only_key_is_deterministic() -> None:
    a = append_only_key("t", 5, {"x": 1, "y": [1, 2]})
    assert a == append_only_key("t", 5, {"y": [1, 2], "x": 1})
    assert a != append_only_key("t", 6, {"x": 1, "y": [1, 2]})
    assert a != append_only_key("u", 5, {"x": 1, "y": [1, 2]})


def _header(keys: tuple[str, ...], version: int | None = None) -> Header:
    return Header(1, "t", keys, None, version, "2026-11-26T10:00:00Z", "r", "push")


def _rec(seq: int, data: dict[str, object]) -> Record:
    return Record("upsert", seq, data, None, orjson.dumps(data))


def test_plan_segments_on_activation_and_key_change_and_rejects_bad_records() -> None:
    builder = PlanBuilder("t", PG, lambda kind, value: str(value), {})
    # (a plain renderer: the fields are compared as text below)
    builder.feed(_header(("id",), version=3))
    builder.feed(_rec(1, {"id": 1, "s": "ok"}))
    builder.feed(_rec(2, {"s": "no key"}))
    builder.feed(Record("activate_version", 3, None, None, b"{}"))
    builder.feed(_header(()))
    builder.feed(_rec(4, {"s": "appended"}))
    segments = builder.segments
    assert [(s.key_names, s.rows, s.activate_version) for s in segments] == [
        (("id",), 1, 3),
        ((), 1, None),
    ]
    assert segments[1].key_columns == (PRIMARY_KEY,)
    assert [r.reason for r in builder.rejected] == ["missing key property id"]
    staged = segments[0].root
    text = b"".join(staged.spill.text(len(staged.order))).decode()
    row = dict(zip(staged.order, text.rstrip("\n").split(","), strict=True))
    assert (row["s"], row["_sdc_sequence"], row["_sdc_table_version"]) == ("ok", "1", "3")
    builder.close()


def test_reader_yields_headers_and_records_and_refuses_garbage() -> None:
    header = _header(("id",)).encode()
    body = gzip.compress(
        header + b"\n" + b'{"action":"upsert","sequence":1,"data":{"n":123456789012345678901234}}\n'
    )
    got = list(events(lines_of([body[:10], body[10:]])))
    assert isinstance(got[0], Header) and isinstance(got[1], Record)
    assert got[1].data == {"n": 123456789012345678901234}
    with pytest.raises(PermanentError, match="gzip"):
        list(lines_of([b"not gzip"]))
    with pytest.raises(PermanentError, match="truncated"):
        list(lines_of([body[:-8]]))
    with pytest.raises(PermanentError, match="header"):
        list(events([b'{"action":"upsert","sequence":1,"data":{}}']))


@given(
    lines=st.lists(st.sampled_from([b"", b"a", b'{"x":1}', b"\r", b"long" * 50]), max_size=30),
    trailing_newline=st.booleans(),
    cuts=st.lists(st.integers(0, 400), max_size=6),
)
def test_the_reader_yields_every_non_empty_line_however_the_stream_is_cut(
    lines: list[bytes], trailing_newline: bool, cuts: list[int]
) -> None:
    text = b"\n".join(lines) + (b"\n" if trailing_newline else b"")
    body = gzip.compress(text)
    edges = [0, *sorted(min(c, len(body)) for c in cuts), len(body)]  # repeated: empty chunks
    chunks = [body[a:b] for a, b in pairwise(edges)]
    assert list(lines_of(chunks)) == [line for line in text.split(b"\n") if line]
    # The text blocks (for native plans): the same lines, in blocks of whole lines, a block
    # cut after ~TEXT_BYTES (made small here) or after a line longer than that.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(reader, "TEXT_BYTES", 64)
        blocks = list(reader.text_blocks(chunks))
    assert all(block.endswith(b"\n") for block in blocks)
    assert all(b[:-1].rfind(b"\n") < 64 for b in blocks)  # ~TEXT_BYTES, and one line
    got = [line for b in blocks for line in reader.RecordText(b, 0, len(b)).lines()]
    assert got == [line for line in text.split(b"\n") if line]


def test_batch_text_comes_after_its_header_and_broken_objects_are_refused() -> None:
    header = _header(("id",)).encode()
    record = b'{"action":"upsert","sequence":1,"data":{"n":1}}'
    body = gzip.compress(b"\n" + header + b"\n" + record + b"\n\n" + record)
    got = list(reader.batch_events([body[:7], body[7:]], text=True))
    assert isinstance(got[0], Header) and isinstance(got[1], reader.RecordText)
    read = list(reader.records(got))  # the blank lines skipped, as the line reader skips them
    # Every header comes as a Header (the runner logs each one's request id), wherever it is.
    second = _header(("id",)).encode().replace(b'"request_id":"', b'"request_id":"2nd-')
    body2 = gzip.compress(b"\n".join([header, record, record, second, record, b""]))
    kinds = [type(e).__name__ for e in reader.batch_events([body2], text=True)]
    assert kinds == ["Header", "RecordText", "Header", "RecordText"]
    assert read[0] is got[0] and [(type(r), r.raw) for r in read[1:]] == [(Record, record)] * 2  # type: ignore[union-attr]
    with pytest.raises(PermanentError, match="header"):
        list(reader.batch_events([gzip.compress(record)], text=True))
    with pytest.raises(PermanentError, match="truncated"):
        list(reader.batch_events([body[:-8]], text=True))
    with pytest.raises(PermanentError, match="gzip"):
        list(reader.batch_events([b"not gzip"], text=True))


def test_object_store_failures_are_transient_but_a_missing_object_is_permanent() -> None:
    from botocore.exceptions import ClientError, EndpointConnectionError

    from services.loaders.core.errors import TransientError, classify_source
    from services.loaders.postgres.errors import classify

    down = EndpointConnectionError(endpoint_url="http://127.0.0.1:8333/x")
    assert isinstance(classify(down), TransientError)
    missing = ClientError({"Error": {"Code": "NoSuchKey", "Message": "gone"}}, "GetObject")
    assert isinstance(classify(missing), PermanentError)
    slow = ClientError({"Error": {"Code": "SlowDown", "Message": "later"}}, "GetObject")
    assert isinstance(classify(slow), TransientError)
    assert classify_source(ValueError("not S3")) is None


def test_nesting_kept_whole_as_variant_cells() -> None:
    row = nested_row({"id": 1, "a": {"b": [1, 2]}, "t": ["x"], "n": None}, None)
    assert row == {"id": (1, T.BIGINT), "a": ({"b": [1, 2]}, T.VARIANT), "t": (["x"], T.VARIANT)}


def test_splits_use_the_warehouse_suffix_and_may_not_widen_in_place() -> None:
    rules = NameRules(max_bytes=127, case="lower", widen_in_place=False, suffixes={"bi": "it"})
    shape = TableShape("t", columns={"n": T.BIGINT, "s": T.TEXT})
    assert place(shape, rules, "n", T.NUMERIC) == "n__de"  # no in-place bigint -> numeric
    assert place(shape, rules, "s", T.BIGINT) == "s__it"
    assert shape.columns["n"] is T.BIGINT and not shape.widened


class _Conn:
    def rollback(self) -> None:
        pass


class _Db:
    def run(self, fn: Any) -> Any:
        return fn(_Conn())


def test_a_lease_naming_a_newer_destination_version_bypasses_the_cached_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stamps = iter(["2026-12-05T19:30:00.12+00:00", "2026-12-05T19:31:00+00:00"])
    reads: list[int] = []

    def get_destination(_conn: Any, _key: str, client_id: int, reveal: bool) -> dict[str, Any]:
        reads.append(client_id)
        return {"type": "postgres", "config": {}, "updated_at": next(stamps)}

    monkeypatch.setattr(destination_cache.destination_config, "get_destination", get_destination)
    cache = destination_cache.Destinations("postgresql://unused", "k", ttl=3600)
    cache._db = _Db()  # type: ignore[assignment]
    first = cache.get(7)
    assert first is not None and destination_cache._version(first) == 1_796_499_000_120_000
    assert cache.get(7, 1_796_499_000_120_000) is first and reads == [7]  # the same version
    assert cache.get(7) is first and reads == [7]  # no version named: the cache
    second = cache.get(7, 1_796_499_060_000_000)  # the destination changed: read again
    assert second is not None and second is not first and reads == [7, 7]


class _Spool:
    """What the runner says to the spool about a lease of several tables."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def nack(self, token: str, kind: str, error: str, batch_ids: list[int]) -> int:
        self.calls.append(("nack", token, kind, batch_ids))
        return len(batch_ids)

    def acks_and_lease(self, token: str, acks: Any, kind: str | None, owner: str, **_: Any) -> None:
        self.calls.append(("acks", token, [(ids, r["num_rows"]) for ids, r in acks], kind))


def test_a_lease_of_several_tables_loads_each_and_acknowledges_the_loaded_together(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each table is loaded as a lease of its own; one that fails is nacked at once with its
    own batches; the others are acknowledged in one call with their own reports, which also
    asks for the next lease; when every table fails nothing is acknowledged."""
    from common.spool_client import Lease, LeasedBatch
    from services.loaders.core.errors import TransientError
    from services.loaders.core.runner import Loaded, Runner
    from services.loaders.postgres.loader import PostgresWarehouse
    from services.loaders.postgres.settings import PostgresLoaderSettings

    def batch(n: int) -> LeasedBatch:
        return LeasedBatch(n, f"k{n}", 0, n, n, 1, 10, "2026-12-07T10:00:00+00:00", 1)

    def table(name: str, *ids: int) -> Lease:
        return Lease("tok", 7, name, "postgres", "x", tuple(batch(i) for i in ids), 5)

    lease = replace(table("a", 1, 2), more=(table("b", 3), table("c", 4)))
    assert [t.table_name for t in lease.tables] == ["a", "b", "c"]
    runner = Runner(PostgresLoaderSettings(), PostgresWarehouse(), destinations=None)  # type: ignore[arg-type]
    loaded: list[str] = []
    watches: set[int] = set()

    def handle(part: Lease, watch: Any) -> Loaded | TransientError:
        loaded.append(part.table_name)
        watches.add(id(watch))
        assert part.more == () and part.lease_token == "tok"
        if part.table_name == "b":
            return TransientError("b's warehouse said no")
        return Loaded(rows=10 * len(part.batches), rejected=0)

    monkeypatch.setattr(runner, "_handle", handle)
    spool = _Spool()
    runner._tables(spool, "w", lease)  # type: ignore[arg-type]
    assert loaded == ["a", "b", "c"]
    assert len(watches) == 1  # one clock for the whole lease: extended, and its slot, once
    assert spool.calls == [
        ("nack", "tok", "transient", [3]),
        ("acks", "tok", [([1, 2], 20), ([4], 10)], "postgres"),
    ]
    monkeypatch.setattr(runner, "_handle", lambda part, _w: TransientError("down"))
    spool.calls.clear()
    assert runner._tables(spool, "w", lease) == (True, None)  # type: ignore[arg-type]
    assert [c[0] for c in spool.calls] == ["nack", "nack", "nack"]

    # An extension found the lease gone after the first table: nothing more is loaded under
    # it (another leaser may hold its tables), and what loaded is still acknowledged.
    def lost_after(part: Lease, watch: Any) -> Loaded:
        watch.lost = True
        return Loaded(rows=1, rejected=0)

    monkeypatch.setattr(runner, "_handle", lost_after)
    spool.calls.clear()
    runner._tables(spool, "w", lease)  # type: ignore[arg-type]
    assert spool.calls == [("acks", "tok", [([1, 2], 1)], "postgres")]
