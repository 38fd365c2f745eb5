"""One run's child pipeline with small real tap programs (shell scripts): state handed over,
stderr kept with secrets masked, tap failures and the run timeout. No gate is involved: these
taps emit no records, so the built-in target never needs to post."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from services.extractor.redact import MASK, Redactor
from services.extractor.run import RunOutcome, RunRequest, execute

SECRET = "hunter2-very-secret"


def fake_tap(tmp: Path, body: str) -> Path:
    script = tmp / "tap-fake"
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(0o755)
    return script


def run(tmp: Path, body: str, timeout_s: float = 60) -> tuple[RunOutcome, list[Any], float]:
    saved: list[Any] = []
    began = time.monotonic()
    outcome = execute(
        RunRequest(
            executable=fake_tap(tmp, body),
            config={"password": SECRET},
            catalog={"streams": []},
            state={"bookmarks": {"s": 1}},
            target_config={"gate_url": "http://127.0.0.1:9", "token": "skn_unused"},
            timeout_s=timeout_s,
            redactor=Redactor([SECRET]),
            stderr_limit_bytes=4096,
            save_state=lambda state, records: saved.append(state),
            cancel=threading.Event(),
        )
    )
    return outcome, saved, time.monotonic() - began


def test_states_are_saved_and_stderr_is_kept_with_secrets_masked(tmp_path: Path) -> None:
    outcome, saved, _ = run(
        tmp_path,
        # The tap gets its files by path: echo what it was given, then two states.
        'echo "connecting with password $(grep -o hunter2[a-z-]* "$2")" >&2\n'
        'echo "state file: $(cat "$6")" >&2\n'
        """echo '{"type": "STATE", "value": {"bookmarks": {"s": 2}}}'\n"""
        """echo '{"type": "STATE", "value": {"bookmarks": {"s": 3}}}'\n""",
    )
    assert outcome.succeeded, outcome.error
    assert saved == [{"bookmarks": {"s": 2}}, {"bookmarks": {"s": 3}}]
    assert SECRET not in outcome.stderr
    assert f"connecting with password {MASK}" in outcome.stderr
    assert 'state file: {"bookmarks": {"s": 1}}' in outcome.stderr  # started from saved state


def test_a_failing_tap_fails_the_run_with_its_last_words(tmp_path: Path) -> None:
    outcome, saved, _ = run(
        tmp_path,
        """echo '{"type": "STATE", "value": {"bookmarks": {"s": 2}}}'\n"""
        f'echo "could not log in with {SECRET}" >&2\nexit 3\n',
    )
    assert not outcome.succeeded
    assert outcome.error == f"the tap exited with 3: could not log in with {MASK}"
    assert saved == [{"bookmarks": {"s": 2}}]  # what it emitted before failing is kept


def test_bad_tap_output_fails_the_run(tmp_path: Path) -> None:
    outcome, _, _ = run(tmp_path, "echo 'this is not singer'\n")
    assert not outcome.succeeded
    assert outcome.error is not None and "not JSON" in outcome.error


def test_a_run_past_its_timeout_is_stopped(tmp_path: Path) -> None:
    outcome, saved, took = run(
        tmp_path,
        """echo '{"type": "STATE", "value": {"bookmarks": {"s": 2}}}'\nexec sleep 60\n""",
        timeout_s=2,
    )
    assert not outcome.succeeded
    assert outcome.error == "timed out after 2 s"
    assert saved == [{"bookmarks": {"s": 2}}]
    assert took < 20
