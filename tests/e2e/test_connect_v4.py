"""Stitch Connect v4 on the running stack, as an orchestrator (dagster-stitch) uses it: a client
adds an integration through the control API, triggers ``sources/{id}/sync``, polls
``extractions`` until the job completes and ``loads`` until its stream is loaded, follows the
job's log link; a long run is refused a second sync (409) and stopped with ``DELETE``. Another
client's key sees none of it.

This module runs its own extractor and control service (the tap is a wheel the test builds, so
both need its directory); the stack's extractor is stopped meanwhile."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from support import hostile_tap
from support.cli import ok
from support.processes import own_service
from support.stack import demo_warehouse_secrets, wait_for
from support.warehouse import DEMO_WAREHOUSE

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

CONTROL = "http://127.0.0.1:18082"
TAP = f"{hostile_tap.NAME}=={hostile_tap.VERSION}"


@pytest.fixture(scope="module")
def control_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    shared = hostile_tap.extractor_settings(tmp_path_factory.mktemp("hostile-tap"))
    extractor = {
        **shared,
        "SKEIN_EXTRACTOR_METRICS_PORT": "19107",
        "SKEIN_EXTRACTOR_TICK_S": "0.5",
        "SKEIN_EXTRACTOR_FLUSH_INTERVAL_S": "1",
    }
    control = {
        **shared,
        "SKEIN_CONTROL_PORT": "18082",
        "SKEIN_CONTROL_METRICS_PORT": "19118",
        "SKEIN_CONTROL_METRICS_DIR": str(tmp_path_factory.mktemp("control-metrics")),
    }
    with (
        own_service("extractor", extractor, "http://127.0.0.1:19107/healthz", replaces="extractor"),
        own_service("control", control, f"{CONTROL}/healthz"),
    ):
        yield CONTROL


def keyed(key: str) -> httpx.Client:
    return httpx.Client(base_url=CONTROL, headers={"Authorization": f"Bearer {key}"}, timeout=120)


def answer(r: httpx.Response, status: int = 200) -> Any:
    assert r.status_code == status, r.text
    return r.json()


@pytest.fixture(scope="module")
def tenant(control_url: str) -> Iterator[tuple[int, httpx.Client]]:
    """A client made by an operator key, with a destination; its own key's client."""
    with keyed(ok("keys", "create", "--operator")["key"]) as operator:
        cid = answer(operator.post("/v1/clients", json={"name": "connect-v4"}), 201)["client_id"]
        schema = f"e2e_v4_{uuid.uuid4().hex[:8]}"
        answer(
            operator.put(
                f"/v1/clients/{cid}/destination",
                json={
                    "type": "postgres",
                    "dsn": " ".join(f"{k}={v}" for k, v in DEMO_WAREHOUSE.items()),
                    "schema": schema,
                    "secrets": demo_warehouse_secrets(),
                },
            )
        )
    with keyed(ok("keys", "create", "--client", str(cid))["key"]) as http:
        yield cid, http


def add(http: httpx.Client, cid: int, sleep: float) -> dict[str, Any]:
    name = f"v4-{uuid.uuid4().hex[:8]}"
    body = {
        "name": name,
        "tap": TAP,
        "config": {"mode": "victim", "secret": f"s-{uuid.uuid4().hex}", "sleep": sleep},
        "schedule": "0 0 1 1 *",
    }
    added: dict[str, Any] = answer(http.post(f"/v1/clients/{cid}/integrations", json=body), 201)
    assert added["name"] == name and [s["stream"] for s in added["streams"]] == ["probe"]
    assert added["secret_keys"] == ["secret"]
    return added


def extraction(http: httpx.Client, cid: int, job: str) -> dict[str, Any] | None:
    page = answer(http.get(f"/v4/{cid}/extractions"))
    assert set(page) == {"data", "page", "total", "links"}
    return next((e for e in page["data"] if e["job_name"] == job), None)


def test_an_orchestrator_syncs_polls_and_reads_the_log(tenant: tuple[int, httpx.Client]) -> None:
    cid, http = tenant
    source = add(http, cid, sleep=1)
    job = answer(http.post(f"/v4/sources/{source['integration_id']}/sync"))["job_name"]
    assert job.startswith(f"{cid}.{source['integration_id']}.")

    def completed() -> dict[str, Any] | None:
        found = extraction(http, cid, job)
        return found if found and found["completion_time"] else None

    done = wait_for(completed, timeout=180, what="the extraction to complete")
    assert done["source_id"] == source["integration_id"] and done["tap_name"] == hostile_tap.NAME
    assert (done["discovery_exit_status"], done["tap_exit_status"], done["target_exit_status"]) == (
        0, 0, 0,
    )  # fmt: skip

    def loaded() -> dict[str, Any] | None:
        page = answer(http.get(f"/v4/{cid}/loads"))
        found = [x for x in page["data"] if x["stream_name"] == "probe"]
        return found[0] if found and found[0]["last_batch_loaded_at"] else None

    load = wait_for(loaded, timeout=180, what="the stream's load")
    assert load["stitch_client_id"] == cid and load["source_name"] == source["name"]
    assert load["error_state"] is None

    r = http.get(f"/v4/{cid}/extractions/{job}", follow_redirects=False)
    assert r.status_code == 302, r.text
    link = r.headers["location"]
    log = httpx.get(f"{CONTROL}{link}")  # no key: the link is signed
    assert log.status_code == 200 and job in log.text and "succeeded" in log.text
    assert source["config_keys"] == ["mode", "secret", "sleep"]
    forged = link[:-1] + ("0" if link[-1] != "0" else "1")
    assert httpx.get(f"{CONTROL}{forged}").json()["error"]["code"] == "forbidden"


def test_a_running_source_is_not_synced_twice_and_can_be_stopped(
    tenant: tuple[int, httpx.Client],
) -> None:
    cid, http = tenant
    source = add(http, cid, sleep=300)
    path = f"/v4/sources/{source['integration_id']}/sync"
    job = answer(http.post(path))["job_name"]
    again = http.post(path)
    assert again.status_code == 409 and again.json()["error"]["job_name"] == job
    assert answer(http.delete(path)) == {"job_name": job, "stopping": True}

    def ended() -> dict[str, Any] | None:
        found = extraction(http, cid, job)
        return found if found and found["completion_time"] else None

    stopped = wait_for(ended, timeout=60, what="the stopped run to end")
    assert stopped["target_exit_status"] == 1 and "stopped" in stopped["target_description"]
    # a stop is no failure to retry: the next run comes on schedule, not 30 s later
    after = answer(http.get(f"/v1/clients/{cid}/integrations/{source['name']}"))
    assert after["consecutive_failures"] == 0 and after["next_run_at"] > stopped["completion_time"]
    assert after["next_run_at"][:4] > stopped["completion_time"][:4]  # "0 0 1 1 *": next year
    gone = http.delete(path)
    assert gone.status_code == 409 and gone.json()["error"]["code"] == "conflict"


def test_another_client_sees_none_of_it(tenant: tuple[int, httpx.Client]) -> None:
    cid, http = tenant
    source = answer(http.get(f"/v1/clients/{cid}/integrations"))["data"][0]
    with keyed(ok("keys", "create", "--operator")["key"]) as operator:
        other = answer(operator.post("/v1/clients", json={"name": "other"}), 201)["client_id"]
    with keyed(ok("keys", "create", "--client", str(other))["key"]) as them:
        for method, path in (
            ("POST", f"/v4/sources/{source['integration_id']}/sync"),
            ("DELETE", f"/v4/sources/{source['integration_id']}/sync"),
            ("GET", f"/v4/{cid}/loads"),
            ("GET", f"/v4/{cid}/extractions"),
            ("GET", f"/v1/clients/{cid}/integrations/{source['name']}"),
        ):
            r = them.request(method, path)
            assert r.status_code == 404 and r.json()["error"]["code"] == "not_found", (path, r.text)
