"""The control API refuses what it can without the database: no key, a key of the wrong shape,
an oversized body; and a database it cannot reach is a 503 with Retry-After."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from services.control import keys
from services.control.api import create_app
from services.control.settings import ControlSettings


@pytest.fixture
def api() -> TestClient:
    # nothing listens on port 1: any database call fails fast
    settings = ControlSettings(
        control_dsn="postgresql://nobody@127.0.0.1:1/none",  # type: ignore[arg-type]
        max_body_bytes=2048,
    )
    return TestClient(create_app(settings), raise_server_exceptions=False)


def test_keys_have_one_shape() -> None:
    assert keys.has_shape("sko_" + "a" * 43) and keys.has_shape("skc_" + "-" * 43)
    for bad in ("sko_" + "a" * 42, "skn_" + "a" * 43, "sko_" + "a" * 42 + "!", ""):
        assert not keys.has_shape(bad)


def test_requests_without_a_well_formed_key_never_reach_the_database(api: TestClient) -> None:
    for headers in ({}, {"Authorization": "Bearer sko_short"}, {"Authorization": "sko_x y"}):
        r = api.get("/v1/clients", headers=headers)
        assert r.status_code == 401
        assert r.json()["error"]["code"] == "unauthorized"


def test_a_database_outage_is_a_503_with_retry_after(api: TestClient) -> None:
    r = api.get("/v1/clients", headers={"Authorization": "Bearer sko_" + "a" * 43})
    assert r.status_code == 503, r.text
    assert r.json()["error"]["code"] == "unavailable" and int(r.headers["retry-after"]) > 0


def test_an_oversized_body_is_a_413(api: TestClient) -> None:
    r = api.post(
        "/v1/clients",
        content=b"{" + b" " * 4096 + b"}",
        headers={"Authorization": "Bearer sko_" + "a" * 43, "Content-Type": "application/json"},
    )
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"


def test_every_route_is_in_the_openapi_document(api: TestClient) -> None:
    """Building the document resolves every route's parameter types (a type only defined inside
    the app factory would fail here, and at its first request)."""
    paths = api.get("/openapi.json").json()["paths"]
    for route in ("/v1/batches", "/v4/{client_id}/loads", "/v4/sources/{source_id}/sync",
                  "/v1/clients/{client_id}/integrations/{name}/runs"):  # fmt: skip
        assert route in paths


def test_a_streamed_body_past_the_bound_is_a_413_too(api: TestClient) -> None:
    """No Content-Length (chunked): the bound counts what arrives."""

    def chunks() -> object:
        for _ in range(8):
            yield b" " * 1024

    r = api.post(
        "/v1/clients",
        content=chunks(),  # type: ignore[arg-type]
        headers={"Authorization": "Bearer sko_" + "a" * 43, "Content-Type": "application/json"},
    )
    assert r.status_code == 413, r.text
    assert r.json()["error"]["code"] == "payload_too_large"


def test_a_malformed_log_link_is_refused_not_a_500(api: TestClient) -> None:
    for signature in ("é" * 64, "zz", "0" * 64):
        r = api.get("/v4/logs/1.2.3", params={"expires": 2**40, "signature": signature})
        assert r.status_code in (403, 422), r.text
    r = api.get(
        "/v4/logs/1.2.99999999999999999999", params={"expires": 2**40, "signature": "0" * 64}
    )
    assert r.status_code in (403, 422)
