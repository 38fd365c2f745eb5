"""Integrations and runs on the real control database: one run at a time per integration, dead
runs closed only once their extractor is gone, and the CLI's answers to bad requests."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from common import control, db, netpolicy, tokens
from common.settings import SharedSettings
from services.control import accounts, hooks
from services.extractor import integrations, locks, runs
from services.extractor.scheduler import Scheduler
from services.extractor.settings import ExtractorSettings
from support.stack import wait_for

SKEIN = str(Path(sys.executable).parent / "skein")
CATALOG = {
    "streams": [
        {
            "tap_stream_id": "public-t",
            "stream": "t",
            "schema": {"properties": {"id": {"type": "integer"}}},
            "metadata": [{"breadcrumb": [], "metadata": {"selected": True}}],
        }
    ]
}


def new_integration(conn: control.Connection, **overrides: Any) -> dict[str, Any]:
    client = accounts.create_client(conn, "extractor-control")
    values: dict[str, Any] = {
        "client_id": client["client_id"],
        "name": f"ctl-{uuid.uuid4().hex[:10]}",
        "tap_package": "tap-example",
        "tap_version": "1.0.0",
        "tap_executable": "tap-example",
        "config": {"host": "h", "password": "pw-123456"},
        "secret_keys": ["password"],
        "catalog": CATALOG,
        "schedule": "0 0 1 1 *",
        "next_run_at": datetime.now(UTC) + timedelta(days=30),
    }
    values.update(overrides)
    return integrations.create(conn, SharedSettings().secret_key.get_secret_value(), **values)


def skein(*args: str) -> tuple[int, dict[str, Any]]:
    done = subprocess.run([SKEIN, *args], capture_output=True, text=True, timeout=60, check=False)
    return done.returncode, json.loads(done.stdout)


def test_secrets_are_sealed_and_a_run_sees_them_decrypted() -> None:
    with closing(db.connect()) as conn:
        made = new_integration(conn)
        assert made["config_keys"] == ["host", "password"]
        assert "pw-123456" not in json.dumps(made)
        with conn, conn.cursor() as cur:
            cur.execute(
                "SELECT sealed FROM integrations WHERE integration_id = %s",
                (made["integration_id"],),
            )
            row = cur.fetchone()
        assert row is not None and b"pw-123456" not in bytes(row[0])
        key = SharedSettings().secret_key.get_secret_value()
        assert runs.load(conn, key, made["integration_id"]) is None  # not due
        # Holding its run lock keeps the stack's extractor from running it once it is due.
        assert locks.try_lock(conn, made["integration_id"])
        integrations.request_run(conn, made["name"])
        spec = runs.load(conn, key, made["integration_id"])
        assert spec is not None and spec.manual
        assert spec.config == {"host": "h", "password": "pw-123456"}
        assert spec.token.startswith("skn_")
        assert tokens.lookup_api_token(conn, spec.token) is not None
        integrations.remove(conn, made["name"])
        locks.unlock(conn, made["integration_id"])
        assert tokens.lookup_api_token(conn, spec.token) is None  # revoked with it


def test_a_dead_run_is_closed_only_after_its_extractor_is_gone() -> None:
    settings = ExtractorSettings(retry_base_s=60, retry_cap_s=60)
    with closing(db.connect()) as conn:
        made = new_integration(conn)
        integration_id = made["integration_id"]
        running_conn = db.connect()
        assert locks.try_lock(running_conn, integration_id)
        runs.start_run(running_conn, integration_id, "manual", "elsewhere:1")

        other = db.connect()
        assert not locks.try_lock(other, integration_id)  # one run at a time
        other.close()
        scheduler = Scheduler(settings)
        scheduler.reap(conn)
        assert runs.list_runs(conn, made["name"])[0]["status"] == "running"

        running_conn.close()  # the extractor holding it dies: its session and lock go
        before = datetime.now(UTC)

        def reaped() -> dict[str, Any] | None:
            # The stack's extractor may be the one that closes it (it reaps too): either will do.
            scheduler.reap(conn)
            run = runs.list_runs(conn, made["name"])[0]
            return run if run["status"] != "running" else None

        run = wait_for(reaped, timeout=10, what="the dead run closed")
        assert run["status"] == "failed"
        assert "stopped" in run["error"]
        after = integrations.require(conn, made["name"])
        assert after["consecutive_failures"] == 1
        retry_at = datetime.fromisoformat(after["next_run_at"])
        # First failure: the base back-off jittered into [1/2, 1) of it, by whichever reaper
        # closed the run: this scheduler (60 s base: 30-60 s) or the stack's extractor (30 s
        # base: 15-30 s). The yearly schedule never comes sooner.
        assert before + timedelta(seconds=14) <= retry_at <= before + timedelta(seconds=61)
        integrations.remove(conn, made["name"])


def test_paused_integrations_are_not_due_and_cannot_be_run() -> None:
    with closing(db.connect()) as conn:
        # Never due while unpaused here: the stack's extractor would run it.
        made = new_integration(conn)
        past = datetime.now(UTC) - timedelta(seconds=1)
        integrations.set_paused(conn, made["name"], True, past)
        assert integrations.require(conn, made["name"])["next_run_at"] == past.isoformat()
        assert made["integration_id"] not in runs.due(conn, 1000)
        code, answer = skein("integrations", "run", made["name"])
        assert code == 1 and "paused" in answer["error"]
        code, answer = skein("integrations", "resume", made["name"])
        assert code == 0 and answer["paused"] is False
        assert datetime.fromisoformat(answer["next_run_at"]) > datetime.now(UTC)
        integrations.remove(conn, made["name"])


def test_a_reset_clears_bookmarks_until_a_run_begun_after_it_succeeds() -> None:
    two = {"streams": [*CATALOG["streams"], {**CATALOG["streams"][0], "tap_stream_id": "u"}]}
    key = SharedSettings().secret_key.get_secret_value()
    finish = {"records": {}, "error": None, "stderr": "", "next_run_at": datetime.now(UTC)}
    with closing(db.connect()) as conn:
        made = new_integration(conn, catalog=two)
        name, integration_id = made["name"], made["integration_id"]
        assert locks.try_lock(conn, integration_id)  # the stack's extractor keeps off
        state = {"bookmarks": {"public-t": {"id": 5}, "u": {"id": 7}}, "currently_syncing": "u"}
        before = runs.start_run(conn, integration_id, "manual", "test:1")
        runs.save_state(conn, integration_id, before, state, {})

        code, answer = skein("integrations", "reset", name, "--stream", "nope")
        assert code == 1 and "has no stream 'nope'" in answer["error"]
        assert integrations.require(conn, name)["state"] == state  # nothing changed
        code, answer = skein("integrations", "reset", name, "--stream", "u")
        assert (code, answer) == (0, {"name": name, "reset_streams": ["u"]})
        found = integrations.require(conn, name)
        assert found["state"] == {"bookmarks": {"public-t": {"id": 5}}}
        assert found["reset_streams"] == ["u"] and found["reset_requested_at"] is not None

        # Runs while it is pending start without u's bookmark (even one a failed reset run
        # saved) and give u's records a new table version.
        runs.save_state(conn, integration_id, before, state, {})
        integrations.request_run(conn, name)
        spec = runs.load(conn, key, integration_id)
        assert spec is not None and spec.reset_streams == ("u",)
        assert spec.state == {"bookmarks": {"public-t": {"id": 5}}}
        assert spec.reset_version is not None and spec.reset_version > 1.7e12  # ms clock

        # The run that was going when the reset came succeeds: the reset stays pending.
        runs.finish_run(conn, before, succeeded=True, **finish)
        assert integrations.require(conn, name)["reset_streams"] == ["u"]
        after = runs.start_run(conn, integration_id, "manual", "test:1")
        runs.finish_run(conn, after, succeeded=False, **finish)
        assert integrations.require(conn, name)["reset_streams"] == ["u"]
        after = runs.start_run(conn, integration_id, "manual", "test:1")
        runs.finish_run(conn, after, succeeded=True, **finish)
        found = integrations.require(conn, name)
        assert (found["reset_streams"], found["reset_requested_at"]) == (None, None)
        runs.save_state(conn, integration_id, after, state, {})
        integrations.request_run(conn, name)
        spec = runs.load(conn, key, integration_id)
        assert spec is not None and spec.reset_version is None and spec.state == state
        integrations.remove(conn, name)
        locks.unlock(conn, integration_id)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["integrations", "run", "no-such-integration"], "no integration named"),
        (["integrations", "runs", "no-such-integration"], "no integration named"),
        (["integrations", "ls", "999999999"], "no client 999999999"),
        (
            ["integrations", "add", "999999999", "x", "--tap", "t", "--config", "/dev/null"],
            "no client 999999999",
        ),
    ],
)
def test_cli_refuses_unknown_names_with_a_json_error(args: list[str], message: str) -> None:
    code, answer = skein(*args)
    assert code == 1
    assert message in answer["error"]


def test_cli_refuses_a_bad_schedule_name_or_config_before_installing(tmp_path: Path) -> None:
    with closing(db.connect()) as conn:
        client_id = accounts.create_client(conn, "extractor-cli")["client_id"]
    config = tmp_path / "config.json"
    config.write_text("{}")
    cases = [
        (["--schedule", "every hour"], "ok-name", "expected 5 cron fields", "{}"),
        (["--schedule", "0 25 * * *"], "ok-name", "not a valid cron", "{}"),
        ([], "bad name!", "integration name", "{}"),
        ([], "ok-name", "must hold a JSON object", "[1, 2]"),
        ([], "ok-name", "is not JSON", "{nope"),
        (["--tap", "tap>=1"], "ok-name", "pin an exact version", "{}"),
    ]
    for extra, name, message, content in cases:
        config.write_text(content)
        tap = [] if "--tap" in extra else ["--tap", "tap-example"]
        code, answer = skein(
            "integrations", "add", str(client_id), name, *tap, "--config", str(config), *extra
        )
        assert code == 1, answer
        assert message in answer["error"], answer


def test_a_config_sealed_with_another_key_fails_the_run_visibly() -> None:
    with closing(db.connect()) as conn:
        made = new_integration(conn)
        scheduler = Scheduler(ExtractorSettings(SKEIN_SECRET_KEY="some-other-key"))  # type: ignore[call-arg]
        lock_conn = db.connect()
        assert locks.try_lock(lock_conn, made["integration_id"])  # see above
        integrations.request_run(conn, made["name"])
        scheduler.run_locked(lock_conn, made["integration_id"])  # closes lock_conn
        run = runs.list_runs(conn, made["name"])[0]
        assert run["status"] == "failed"
        assert "cannot decrypt" in run["error"]
        assert integrations.require(conn, made["name"])["consecutive_failures"] == 1
        integrations.remove(conn, made["name"])


def test_closing_a_run_tells_the_clients_hooks_in_the_same_transaction() -> None:
    """extraction.succeeded / extraction.failed are written with the run's end, and only for a
    client whose hook wants them."""
    with closing(db.connect()) as conn:
        made = new_integration(conn)
        client_id = made["client_id"]
        policy = netpolicy.NetworkPolicy(netpolicy.parse_allowed("127.0.0.1:8790-8799"))
        hooks.create_hook(
            conn,
            policy,
            SharedSettings().secret_key.get_secret_value(),
            client_id,
            "http://127.0.0.1:8799/h",
            ["extraction.failed", "extraction.succeeded"],
        )
        # Holding its run lock keeps the stack's extractor away from it.
        assert locks.try_lock(conn, made["integration_id"])
        for succeeded in (True, False):
            run_id = runs.start_run(conn, made["integration_id"], "manual", "test:1")
            runs.finish_run(
                conn,
                run_id,
                succeeded=succeeded,
                records={"t": 3},
                error=None if succeeded else "tap exited 1",
                stderr="",
                next_run_at=datetime.now(UTC) + timedelta(days=1),
            )
        with conn, conn.cursor() as cur:
            cur.execute(
                "SELECT type, payload FROM hook_events WHERE client_id = %s ORDER BY created_at",
                (client_id,),
            )
            events = cur.fetchall()
        locks.unlock(conn, made["integration_id"])
        integrations.remove(conn, made["name"])
    assert [t for t, _ in events] == ["extraction.succeeded", "extraction.failed"]
    ok, failed = (p for _, p in events)
    assert ok["integration_name"] == made["name"] and ok["records"] == {"t": 3}
    assert failed["status"] == "failed" and failed["error"] == "tap exited 1"


TWO_STREAMS = {
    "streams": [
        {
            "tap_stream_id": name,
            "stream": name,
            "schema": {"properties": {"id": {"type": "integer"}, "at": {"type": "string"}}},
            "metadata": [{"breadcrumb": [], "metadata": {"selected": True}}],
        }
        for name in ("orders", "users")
    ]
}


def test_a_schedule_and_streams_change_after_the_integration_is_added() -> None:
    """`skein integrations set`: a new schedule moves the next run; the selection is made from
    the catalog discovered at `add` (a stream it does not have is refused and nothing changes);
    a selected stream keeps its replication key."""
    from services.extractor import catalog

    with closing(db.connect()) as conn:
        keyed = catalog.select(TWO_STREAMS, ["orders", "users"], {"orders": "at"})
        found = new_integration(conn, catalog=keyed)
    name = found["name"]
    code, out = skein("integrations", "set", name, "--select", "nope")
    assert code == 1 and "no stream nope" in out["error"]
    code, out = skein("integrations", "set", name, "--schedule", "not cron")
    assert code == 1
    code, out = skein(
        "integrations", "set", name, "--schedule", "*/5 * * * *", "--select", "orders"
    )
    assert code == 0, out
    assert out["schedule"] == "*/5 * * * *"
    assert out["streams"] == [
        {"stream": "orders", "replication_method": "INCREMENTAL", "replication_key": "at"}
    ]
    next_run = datetime.fromisoformat(out["next_run_at"])
    assert next_run - datetime.now(UTC) <= timedelta(minutes=5)
    code, out = skein("integrations", "set", name, "--select-all")
    assert code == 0
    assert [s["stream"] for s in out["streams"]] == ["orders", "users"]
