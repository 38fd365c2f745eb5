"""Every documented answer of the gate, through HTTP, with Kafka and the control DB faked."""

from __future__ import annotations

import gzip
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from common import metrics as common_metrics
from common.db import ControlDb
from common.tokens import ApiTokenInfo, WebhookInfo
from common.wire import decode_message
from services.gate import fastlane
from services.gate.app import create_app
from services.gate.auth import TokenCache
from services.gate.intake import Gate
from services.gate.producer import NotDelivered, OutgoingMessage
from services.gate.quotas import Quotas
from services.gate.schemas import SchemaCache
from services.gate.settings import GateSettings

TOKEN = "skn_" + "g" * 43
OTHER = "skn_" + "o" * 43
HOOK = "whk_" + "h" * 32
SCHEMA = {"properties": {"id": {"type": "integer"}, "name": {"type": "string"}}}


@dataclass
class FakeProducer:
    sent: list[OutgoingMessage] = field(default_factory=list)
    fail: bool = False

    async def send(self, messages: Sequence[OutgoingMessage], timeout: float) -> None:
        if self.fail:
            raise NotDelivered("brokers down")
        self.sent.extend(messages)

    def reachable(self, timeout: float = 2.0) -> bool:
        return not self.fail

    def close(self, timeout: float = 30.0) -> int:
        return 0


@dataclass
class FakeDirectory:
    down: bool = False
    api: dict[str, ApiTokenInfo] = field(
        default_factory=lambda: {TOKEN: ApiTokenInfo(7, None), OTHER: ApiTokenInfo(8, 1)}
    )
    hooks: dict[str, WebhookInfo] = field(
        default_factory=lambda: {HOOK: WebhookInfo(3, 7, "events", "id", None)}
    )
    tables: dict[int, set[str]] = field(default_factory=dict)

    async def api_token(self, token: str) -> ApiTokenInfo | None:
        if self.down:
            raise ConnectionError("control db down")
        return self.api.get(token)

    async def webhook(self, token: str) -> WebhookInfo | None:
        if self.down:
            raise ConnectionError("control db down")
        return self.hooks.get(token)

    async def admit_tables(self, client_id: int, names: list[str], limit: int) -> list[str]:
        """client_limits.admit_tables in memory: all of a request's new tables, or none."""
        held = self.tables.setdefault(client_id, set())
        new = [n for n in names if n not in held]
        if len(held) + len(new) > limit:
            return new
        held.update(new)
        return []


@pytest.fixture(params=[True, False], ids=["lane", "python"])
def world(
    request: pytest.FixtureRequest,
) -> Iterator[tuple[TestClient, FakeProducer, FakeDirectory]]:
    """A gate with fakes around it; every test runs with the native /batch lane on (where it is
    built) and off: the answers must not differ."""
    settings = GateSettings(
        max_body_bytes=1024 * 1024, max_records=100, token_ttl_s=60, native_batch=request.param
    )
    producer = FakeProducer()
    directory = FakeDirectory()

    def build(s: GateSettings) -> Gate:
        return Gate(
            settings=s,
            producer=producer,  # type: ignore[arg-type]
            db=ControlDb("postgresql://unused"),
            api_tokens=TokenCache(directory.api_token, s.token_ttl_s, s.token_grace_s),
            webhooks=TokenCache(directory.webhook, s.token_ttl_s, s.token_grace_s),
            schemas=SchemaCache(s.schema_cache_size, s.max_schema_bytes),
            quotas=Quotas(s, directory.admit_tables),
        )

    with TestClient(create_app(settings, build)) as client:
        yield client, producer, directory


def post(
    client: TestClient, path: str, body: Any, token: str | None = TOKEN, **headers: str
) -> Any:
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    hdrs = {"Content-Type": "application/json", **headers}
    if token:
        hdrs["Authorization"] = f"Bearer {token}"
    return client.post(path, content=content, headers=hdrs)


def batch(n: int = 2, **over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "table_name": "users",
        "schema": SCHEMA,
        "key_names": ["id"],
        "messages": [
            {"action": "upsert", "sequence": 100 + i, "data": {"id": i, "name": f"n{i}"}}
            for i in range(n)
        ],
    }
    body.update(over)
    return body


def push(n: int = 2, client_id: int = 7, table: str = "events") -> list[dict[str, Any]]:
    return [
        {
            "client_id": client_id,
            "table_name": table,
            "sequence": 1 + i,
            "action": "upsert",
            "key_names": ["id"],
            "data": {"id": i},
        }
        for i in range(n)
    ]


World = tuple[TestClient, FakeProducer, FakeDirectory]


def test_the_native_lane_is_built_where_ci_requires_it() -> None:
    if os.environ.get("SKEIN_REQUIRE_NATIVE"):
        assert fastlane.available(), "make install did not build services/gate/native"


def test_a_valid_batch_takes_the_lane_where_it_is_on(
    world: World, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    client, producer, _ = world
    decided: list[object] = []
    decide = fastlane.decide

    def spy(*args: Any) -> Any:
        decided.append(decide(*args))
        return decided[-1]

    monkeypatch.setattr(fastlane, "decide", spy)
    assert post(client, "/v2/import/batch", batch(3)).status_code == 202
    assert len(producer.sent) == 1
    lane_on = request.node.callspec.params["world"] and fastlane.available()
    assert [d is not None for d in decided] == ([True] if lane_on else [])


def test_status_needs_no_auth(world: World) -> None:
    client, _, _ = world
    r = client.get("/v2/import/status")
    assert r.status_code == 200
    assert r.json()["status"] == "OK"


def test_batch_accepted_and_produced_under_the_table_key(world: World) -> None:
    client, producer, _ = world
    r = post(client, "/v2/import/batch", batch(3))
    assert r.status_code == 202
    assert r.json() == {"status": "Accepted", "message": "The batch is queued to be processed."}
    assert [m.key for m in producer.sent] == [b"7/users"]
    header, lines = decode_message(producer.sent[0].value)
    assert (header.client_id, header.table_name, header.key_names) == (7, "users", ("id",))
    assert header.schema == SCHEMA
    assert [orjson.loads(line)["data"]["id"] for line in lines] == [0, 1, 2]
    assert r.headers["x-request-id"] == header.request_id


@pytest.mark.parametrize(
    ("headers", "token"),
    [({}, None), ({"Authorization": "Basic abc"}, None), ({}, "skn_unknown"), ({}, "")],
)
def test_missing_or_bad_token_is_401(
    world: World, headers: dict[str, str], token: str | None
) -> None:
    client, producer, _ = world
    r = post(client, "/v2/import/batch", batch(), token=token, **headers)
    assert r.status_code == 401
    assert r.json() == {"message": "Not Authorized"}
    assert producer.sent == []


def test_push_with_another_clients_id_is_403(world: World) -> None:
    client, producer, _ = world
    r = post(client, "/v2/import/push", push(client_id=8))
    assert r.status_code == 403
    assert r.json() == {
        "status": "ERROR",
        "error": "Forbidden",
        "errors": {"error": "Access token is not associated with this client."},
    }
    assert producer.sent == []


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "Malformed json in the body!"),
        (b'{"table_name": "t", "x": NaN}', "Malformed json in the body!"),
        (b"[Infinity]", "Malformed json in the body!"),
        (b'{"a": "\xff"}', "Malformed json in the body!"),
        (b"", "The request body is empty"),
        (b"[" * 65 + b"]" * 65, "JSON nests deeper than 64 levels"),
        (b"[" * 10000 + b"]" * 10000, "JSON nests deeper than 64 levels"),
    ],
)
def test_batch_unparseable_bodies_are_400_with_error(
    world: World, body: bytes, message: str
) -> None:
    client, producer, _ = world
    r = post(client, "/v2/import/batch", body)
    assert r.status_code == 400
    assert r.json() == {"error": message}
    assert producer.sent == []


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"table_name": ""}, "table_name must be a non-empty string"),
        ({"table_name": None}, "table_name must be a non-empty string"),
        ({"table_name": "_sdc_rejected"}, "reserved"),
        ({"schema": {"type": "object"}}, "schema must be an object with properties"),
        ({"messages": []}, "1 to 100 records"),
        ({"key_names": "id"}, "key_names must be an array"),
        ({"table_version": "v1"}, "table_version must be an integer"),
    ],
)
def test_batch_field_errors_are_400(world: World, change: dict[str, Any], fragment: str) -> None:
    client, producer, _ = world
    r = post(client, "/v2/import/batch", batch(**change))
    assert r.status_code == 400
    assert fragment in r.json()["error"]
    assert producer.sent == []


def test_missing_table_name_is_400(world: World) -> None:
    client, _, _ = world
    body = batch()
    del body["table_name"]
    r = post(client, "/v2/import/batch", body)
    assert r.status_code == 400
    assert "table_name" in r.json()["error"]


def test_too_many_records_is_400(world: World) -> None:
    client, producer, _ = world
    r = post(client, "/v2/import/batch", batch(101))
    assert r.status_code == 400
    assert "1 to 100 records" in r.json()["error"]
    assert producer.sent == []


def test_record_not_conforming_names_index_and_path(world: World) -> None:
    client, producer, _ = world
    body = batch(3)
    body["messages"][2]["data"]["name"] = 5
    r = post(client, "/v2/import/batch", body)
    assert r.status_code == 400
    error = r.json()["error"]
    assert error.startswith("Record 2 did not conform to schema: data.name:")
    assert "string" in error
    assert producer.sent == []


def test_missing_or_null_key_is_400(world: World) -> None:
    client, _, _ = world
    body = batch()
    del body["messages"][1]["data"]["id"]
    r = post(client, "/v2/import/batch", body)
    assert (r.status_code, r.json()) == (400, {"error": "Record is missing key property id"})
    body["messages"][1]["data"]["id"] = None
    body["schema"] = {"properties": {"id": {"type": ["integer", "null"]}}}
    r = post(client, "/v2/import/batch", body)
    assert (r.status_code, r.json()) == (400, {"error": "Record is missing key property id"})


def test_key_values_over_1024_characters_are_refused(world: World) -> None:
    client, _, _ = world
    body = batch(1, schema={"properties": {"id": {"type": "string"}}})
    body["messages"][0]["data"] = {"id": "k" * 1025}
    r = post(client, "/v2/import/batch", body)
    assert r.status_code == 400
    assert "longer than 1024" in r.json()["error"]


@pytest.mark.parametrize("sequence", [2**63, -1, "1", 1.5, True])
def test_bad_sequence_is_400(world: World, sequence: Any) -> None:
    client, _, _ = world
    body = batch(1)
    body["messages"][0]["sequence"] = sequence
    r = post(client, "/v2/import/batch", body)
    assert r.status_code == 400
    assert "sequence" in r.json()["error"]


def test_max_sequence_is_accepted(world: World) -> None:
    client, _, _ = world
    body = batch(1)
    body["messages"][0]["sequence"] = 2**63 - 1
    assert post(client, "/v2/import/batch", body).status_code == 202


def test_reserved_field_names_are_refused(world: World) -> None:
    client, producer, _ = world
    body = batch(1)
    body["messages"][0]["data"]["_sdc_sequence"] = 1
    r = post(client, "/v2/import/batch", body)
    assert r.status_code == 400
    assert "_sdc_sequence" in r.json()["error"]
    assert producer.sent == []


def test_integers_beyond_64_bits_are_kept_exact(world: World) -> None:
    client, producer, _ = world
    big = 2**70 + 1
    body = orjson.dumps(batch(1, schema={"properties": {"id": {}, "n": {"type": "integer"}}}))
    body = body.replace(b'"name":"n0"', b'"n":' + str(big).encode())
    r = post(client, "/v2/import/batch", body)
    assert r.status_code == 202
    _, lines = decode_message(producer.sent[0].value)
    assert str(big).encode() in lines[0]


def test_duplicate_keys_last_one_wins(world: World) -> None:
    client, producer, _ = world
    raw = orjson.dumps(batch(1)).replace(b'"name":"n0"', b'"name":"first","name":"last"')
    assert post(client, "/v2/import/batch", raw).status_code == 202
    _, lines = decode_message(producer.sent[0].value)
    assert orjson.loads(lines[0])["data"]["name"] == "last"


def _nested_items(depth: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "integer"}
    for _ in range(depth):
        schema = {"type": "array", "items": schema}
    return schema


def test_a_schema_with_an_id_validates_records(world: World) -> None:
    # fastjsonschema names the validator after "$id"; the gate looked for "validate" and
    # refused the schema (400 "invalid schema: KeyError").
    client, producer, _ = world
    body = batch(2, schema={"$id": "http://example.com/orders", **batch()["schema"]})
    assert post(client, "/v2/import/batch", body).status_code == 202
    assert len(producer.sent) == 1
    bad = batch(1, schema=body["schema"])
    bad["messages"][0]["data"]["id"] = "one"
    r = post(client, "/v2/import/batch", bad)
    assert r.status_code == 400 and "did not conform" in r.json()["error"]


@pytest.mark.parametrize(
    ("schema", "fragment"),
    [
        ({"properties": {"a": {"$ref": "http://example.com/s.json"}}}, "remote $ref"),
        ({"properties": {"a": {"type": "strang"}}}, "unknown type"),
        ({"properties": {"a": {"type": "string", "pattern": "(a)\\1"}}}, "RE2"),
        ({"properties": {f"p{i}": {"type": "string"} for i in range(20000)}}, "exceeds the limit"),
        ({"properties": {"a": _nested_items(25)}}, "too complex to compile"),
    ],
)
def test_hostile_schemas_are_400(world: World, schema: dict[str, Any], fragment: str) -> None:
    client, producer, _ = world
    r = post(client, "/v2/import/batch", batch(1, schema=schema))
    assert r.status_code == 400
    assert fragment in r.json()["error"]
    assert producer.sent == []


def test_catastrophic_pattern_runs_in_linear_time(world: World) -> None:
    client, _, _ = world
    schema = {
        "properties": {"id": {"type": "integer"}, "name": {"type": "string", "pattern": "^(a+)+$"}}
    }
    body = batch(1, schema=schema)
    body["messages"][0]["data"]["name"] = "a" * 5000 + "!"
    r = post(client, "/v2/import/batch", body)  # with backtracking this would never return
    assert r.status_code == 400
    assert "did not conform" in r.json()["error"]


def test_schemas_are_compiled_once_per_distinct_schema(world: World) -> None:
    client, _, _ = world
    for _ in range(5):
        assert post(client, "/v2/import/batch", batch()).status_code == 202
    gate: Gate = client.app.state.gate  # type: ignore[attr-defined]
    assert gate.schemas.compiles == 1


def test_wrong_content_type_is_415_json(world: World) -> None:
    client, producer, _ = world
    r = post(client, "/v2/import/batch", batch(), **{"Content-Type": "text/plain"})
    assert r.status_code == 415
    assert r.json()["status"] == "ERROR"
    assert producer.sent == []


def test_body_over_limit_is_413(world: World) -> None:
    client, producer, _ = world
    r = post(client, "/v2/import/push", b"[" + b" " * (1024 * 1024 + 10) + b"]")
    assert r.status_code == 413
    assert r.json()["message"].startswith("Request rejected: request size")
    assert producer.sent == []


def test_gzip_body_is_accepted(world: World) -> None:
    client, producer, _ = world
    r = post(
        client,
        "/v2/import/push",
        gzip.compress(orjson.dumps(push(3))),
        **{"Content-Encoding": "gzip"},
    )
    assert r.status_code == 202
    assert len(producer.sent) == 1


def test_gzip_bomb_is_413_and_broken_gzip_400(world: World) -> None:
    client, producer, _ = world
    bomb = gzip.compress(b"[" + b" " * (50 * 1024 * 1024) + b"]")
    assert len(bomb) < 1024 * 1024
    r = post(client, "/v2/import/push", bomb, **{"Content-Encoding": "gzip"})
    assert r.status_code == 413
    r = post(client, "/v2/import/push", b"not gzip at all", **{"Content-Encoding": "gzip"})
    assert r.status_code == 400
    assert "gzip" in r.json()["message"]
    assert producer.sent == []


def test_push_shapes(world: World) -> None:
    client, producer, _ = world
    r = post(client, "/v2/import/push", b"{bad")
    assert (r.status_code, r.json()) == (
        400,
        {"status": "ERROR", "message": "Malformed json in the body!"},
    )
    r = post(client, "/v2/import/push", {"a": 1})
    assert (r.status_code, r.json()) == (
        400,
        {"status": "ERROR", "message": "An array of records is expected"},
    )
    r = post(client, "/v2/import/push", [])
    assert r.status_code == 400
    records = push(2)
    del records[1]["sequence"]
    r = post(client, "/v2/import/push", records)
    assert r.status_code == 422
    body = r.json()
    assert body["status"] == "ERROR" and body["error"] == "Request cannot be processed; see errors."
    assert "sequence" in body["errors"][0]["reason"]
    assert producer.sent == []


def test_push_mixed_tables_go_to_their_own_keys(world: World) -> None:
    client, producer, _ = world
    r = post(client, "/v2/import/push", push(2, table="a") + push(1, table="b"))
    assert r.status_code == 202
    assert sorted(m.key for m in producer.sent) == [b"7/a", b"7/b"]


def test_validate_stores_nothing(world: World) -> None:
    client, producer, _ = world
    r = post(client, "/v2/import/validate", push(3))
    assert (r.status_code, r.json()) == (200, {"status": "OK", "message": "Batch is valid!"})
    assert producer.sent == []
    r = post(client, "/v2/import/validate", push(1, client_id=8))
    assert r.status_code == 403


def test_kafka_failure_is_503_with_retry_after(world: World) -> None:
    client, producer, _ = world
    producer.fail = True
    r = post(client, "/v2/import/batch", batch())
    assert r.status_code == 503
    assert int(r.headers["retry-after"]) >= 1
    assert r.json()["status"] == "ERROR"


def test_control_db_down_known_tokens_work_unknown_get_503(world: World) -> None:
    client, _, directory = world
    assert post(client, "/v2/import/batch", batch()).status_code == 202  # TOKEN now cached
    directory.down = True
    gate: Gate = client.app.state.gate  # type: ignore[attr-defined]
    gate.api_tokens._ttl = 0  # force a re-check that fails
    assert post(client, "/v2/import/batch", batch()).status_code == 202
    r = post(client, "/v2/import/batch", batch(), token="skn_" + "n" * 43)
    assert r.status_code == 503
    assert "retry-after" in r.headers


def test_rate_limit_is_429_with_retry_after(world: World) -> None:
    client, _, _ = world
    codes = [
        post(client, "/v2/import/push", push(1, client_id=8), token=OTHER).status_code
        for _ in range(6)
    ]
    assert codes[0] == 202
    assert 429 in codes
    r = post(client, "/v2/import/push", push(1, client_id=8), token=OTHER)
    if r.status_code == 429:
        assert int(r.headers["retry-after"]) >= 1
        assert r.json()["message"].startswith("Rate limit")


def test_webhook_object_and_array(world: World) -> None:
    client, producer, _ = world
    r = post(client, f"/v1/clients/7/token/{HOOK}", {"id": 1, "_sdc_sequence": 9}, token=None)
    assert r.status_code == 202
    header, lines = decode_message(producer.sent[0].value)
    assert (header.table_name, header.key_names, header.source) == ("events", ("id",), "webhook")
    record = orjson.loads(lines[0])
    assert record["data"] == {"id": 1, "x_sdc_sequence": 9}
    r = post(client, f"/v1/clients/7/token/{HOOK}", [{"id": 2}, {"id": 3}], token=None)
    assert r.status_code == 202
    _, lines = decode_message(producer.sent[1].value)
    seqs = [orjson.loads(line)["sequence"] for line in lines]
    assert seqs[1] == seqs[0] + 1


def test_webhook_wrong_client_or_token_is_401_and_missing_key_400(world: World) -> None:
    client, producer, _ = world
    assert post(client, f"/v1/clients/8/token/{HOOK}", {"id": 1}, token=None).status_code == 401
    assert post(client, "/v1/clients/7/token/whk_nope", {"id": 1}, token=None).status_code == 401
    r = post(client, f"/v1/clients/7/token/{HOOK}", {"other": 1}, token=None)
    assert r.status_code == 400
    assert "missing key property id" in r.json()["message"]
    assert producer.sent == []


def test_metrics_use_route_templates_not_token_paths(world: World) -> None:
    client, _, _ = world
    post(client, f"/v1/clients/7/token/{HOOK}", {"id": 1}, token=None)
    assert client.get("/metrics").status_code == 404  # internal port only
    text = common_metrics.exposition().decode()
    assert HOOK not in text
    assert 'route="/v1/clients/{client_id}/token/{webhook_token}"' in text
    assert "skein_gate_records_accepted_total" in text


def test_openapi_describes_every_endpoint(world: World) -> None:
    client, _, _ = world
    spec = client.get("/openapi.json").json()
    for path in ("/v2/import/batch", "/v2/import/push", "/v2/import/validate", "/v2/import/status"):
        assert path in spec["paths"]
    assert "/v1/clients/{client_id}/token/{webhook_token}" in spec["paths"]
    batch_op = spec["paths"]["/v2/import/batch"]["post"]
    assert {"202", "400", "401", "413", "415", "503"} <= set(batch_op["responses"])
    assert "requestBody" in batch_op


def test_a_burst_with_an_expired_token_shares_one_lookup() -> None:
    import asyncio

    calls = 0

    async def lookup(token: str) -> ApiTokenInfo | None:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.05)
        return ApiTokenInfo(7, None)

    async def burst() -> list[ApiTokenInfo | None]:
        cache: TokenCache[ApiTokenInfo] = TokenCache(lookup, ttl=5, grace=60)
        return await asyncio.gather(*(cache.get("skn_x") for _ in range(50)))

    results = asyncio.run(burst())
    assert results == [ApiTokenInfo(7, None)] * 50
    assert calls == 1


def test_reserved_field_names_spelt_with_escapes_are_refused_too(world: World) -> None:
    client, producer, _ = world
    body = orjson.dumps(batch(1)).replace(b'"data":{', b'"data":{"\\u005fsdc_row":"x",', 1)
    assert b'"_sdc' not in body
    r = post(client, "/v2/import/batch", body)
    assert r.status_code == 400
    assert "_sdc_row" in r.json()["error"]
    assert producer.sent == []


@pytest.mark.parametrize(
    "authorization",
    [
        "Bearer skn_" + "a" * 42,  # one short
        "Bearer skn_" + "a" * 44,  # one long
        "Bearer skn_" + "a" * 5000,
        "Bearer whk_" + "a" * 43,  # a webhook token is not an API token
        "Bearer skn_" + "a" * 42 + "=",
    ],
)
def test_tokens_of_the_wrong_shape_never_reach_the_cache_or_database(
    world: World, authorization: str
) -> None:
    client, producer, directory = world
    asked: list[str] = []
    real = directory.api_token

    async def spy(token: str) -> ApiTokenInfo | None:
        asked.append(token)
        return await real(token)

    gate: Gate = client.app.state.gate  # type: ignore[attr-defined]
    gate.api_tokens._lookup = spy
    r = post(client, "/v2/import/batch", batch(), token=None, Authorization=authorization)
    assert r.status_code == 401 and r.json() == {"message": "Not Authorized"}
    assert asked == [] and len(gate.api_tokens) == 0 and producer.sent == []


def test_a_flood_of_unknown_tokens_never_evicts_valid_ones() -> None:
    import asyncio

    async def lookup(token: str) -> ApiTokenInfo | None:
        return ApiTokenInfo(7, None) if token.startswith("skn_good") else None

    async def flood() -> tuple[int, int]:
        cache: TokenCache[ApiTokenInfo] = TokenCache(lookup, ttl=60, grace=600, max_entries=100)
        for n in range(50):
            assert await cache.get(f"skn_good{n:035d}") is not None
        for n in range(100_000):
            assert await cache.get(f"skn_bad{n:036d}") is None
        kept = sum(1 for n in range(50) if cache._valid.get(f"skn_good{n:035d}") is not None)
        return kept, len(cache)

    kept, size = asyncio.run(flood())
    assert kept == 50  # every valid token (and so its grace) survived
    assert size <= 100 + 10


@pytest.mark.parametrize("digits", [4300, 4301, 5000, 100_000])
def test_an_integer_of_any_length_is_a_client_error_or_exact(world: World, digits: int) -> None:
    client, producer, _ = world
    body = orjson.dumps(batch(1)).replace(b'"id":0', b'"id":0,"n":' + b"9" * digits, 1)
    assert b"9" * digits in body
    r = post(client, "/v2/import/batch", body)
    if digits <= 4300:
        assert r.status_code == 202, r.text
        return
    assert r.status_code == 400, r.text
    assert f"an integer of {digits} digits" in r.json()["error"]
    assert producer.sent == []


def test_an_oversized_request_line_is_414_and_oversized_headers_431(world: World) -> None:
    client, producer, _ = world
    r = post(client, "/v2/import/batch?" + "q" * 9000, batch())
    assert r.status_code == 414 and "URL is longer" in r.json()["error"]
    r = post(client, "/v2/import/batch", batch(), **{"X-Padding": "p" * 20000})
    assert r.status_code == 431 and "headers are larger" in r.json()["error"]
    assert producer.sent == []
    assert post(client, "/v2/import/batch", batch()).status_code == 202  # ordinary ones pass


LIMITED = "skn_" + "l" * 43


def test_a_client_over_its_distinct_tables_gets_429_naming_the_limit(world: World) -> None:
    client, producer, directory = world
    directory.api[LIMITED] = ApiTokenInfo(9, None, max_tables=3)
    for n in range(3):
        assert (
            post(client, "/v2/import/push", push(1, 9, f"t{n}"), token=LIMITED).status_code == 202
        )
    sent = len(producer.sent)
    r = post(client, "/v2/import/push", push(1, 9, "t3"), token=LIMITED)
    assert r.status_code == 429
    assert r.json()["limit"] == "tables" and r.json()["value"] == 3
    assert "t3" in r.json()["message"]
    assert len(producer.sent) == sent  # nothing of it accepted
    # Known tables keep working; another client is not affected.
    assert post(client, "/v2/import/push", push(1, 9, "t0"), token=LIMITED).status_code == 202
    assert post(client, "/v2/import/push", push(1, 7, "t3")).status_code == 202


def test_a_client_over_its_bytes_per_second_gets_429(world: World) -> None:
    client, _, directory = world
    directory.api[LIMITED] = ApiTokenInfo(9, None, bytes_per_s=2000)
    codes = [
        post(client, "/v2/import/push", push(20, 9), token=LIMITED).status_code for _ in range(8)
    ]
    assert codes[0] == 202 and 429 in codes
    r = post(client, "/v2/import/push", push(20, 9), token=LIMITED)
    assert r.status_code == 429 and r.json()["limit"] == "bytes_per_s"
    assert int(r.headers["retry-after"]) >= 1


def test_a_client_over_its_concurrent_requests_gets_429(world: World) -> None:
    import asyncio

    client, _, directory = world
    directory.api[LIMITED] = ApiTokenInfo(9, None, max_concurrent_requests=1)
    gate: Gate = client.app.state.gate  # type: ignore[attr-defined]
    info = directory.api[LIMITED]

    async def two_at_once() -> str:
        async with gate.quotas.concurrent(info):
            try:
                async with gate.quotas.concurrent(info):
                    return "admitted"
            except Exception as exc:
                return str(getattr(exc, "body", exc))

    assert "concurrent_requests" in asyncio.run(two_at_once())
    assert post(client, "/v2/import/push", push(1, 9), token=LIMITED).status_code == 202
