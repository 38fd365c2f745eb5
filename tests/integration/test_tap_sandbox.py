"""A hostile tap, installed from a wheel the test builds, runs in the extractor's sandbox beside
another client's run: everything it tries against the platform and the other run fails, its
stderr says so, and the other run carries on (docs/architecture.md, Security).

The whole extractor process is exercised the same way in tests/e2e/test_tap_sandbox.py.
"""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path
from typing import Any

import pytest

from services.extractor import run, sandbox, taps
from services.extractor.redact import Redactor
from support import hostile_tap
from support.stack import RUN_DIR

VICTIM_SECRET = "victim-secret-5f0c2a71d9"
CANARY = "SKEIN_SANDBOX_CANARY"


@pytest.fixture(scope="module")
def box() -> sandbox.Sandbox:
    """The sandbox the stack's extractor uses here (bubblewrap required: the stack installs it)."""
    return sandbox.choose("bwrap", "skein-tap")


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory, box: sandbox.Sandbox) -> taps.InstalledTap:
    wheels = tmp_path_factory.mktemp("wheels")
    hostile_tap.build_wheel(wheels)
    policy = taps.InstallPolicy.parse(find_links=str(wheels))
    spec = taps.TapSpec(hostile_tap.NAME, hostile_tap.VERSION)
    return taps.install(tmp_path_factory.mktemp("taps"), spec, 300, policy, box)


def execute(tap: taps.InstalledTap, box: sandbox.Sandbox, config: dict[str, Any]) -> run.RunOutcome:
    states: list[Any] = []
    return run.execute(
        run.RunRequest(
            executable=tap.executable,
            config=config,
            catalog={"streams": []},
            state=None,
            # No gate here: the built-in target is not what is tested; a closed port fails it
            # only after the tap has run, so read the tap's stderr.
            target_config={
                "gate_url": "http://127.0.0.1:9",
                "token": "t",
                "gate_retry_window_s": 0,
            },
            timeout_s=120,
            redactor=Redactor([]),
            stderr_limit_bytes=64 * 1024,
            save_state=lambda state, _records: states.append(state),
            sandbox=box,
        )
    )


def test_installing_runs_no_tap_code_outside_the_sandbox_and_needs_wheels(
    installed: taps.InstalledTap, tmp_path: Path
) -> None:
    assert installed.executable.name == hostile_tap.COMMAND
    # A source distribution is refused unless the operator allows that package.
    (tmp_path / "sdist").mkdir()
    (tmp_path / "sdist" / "tap_sdist_only-1.0.tar.gz").write_bytes(b"not even a tarball")
    policy = taps.InstallPolicy.parse(find_links=str(tmp_path / "sdist"))
    with pytest.raises(taps.TapError, match="wheels only"):
        taps.install(tmp_path / "taps", taps.TapSpec("tap-sdist-only", "1.0"), 120, policy)


def test_only_allowed_taps_install() -> None:
    policy = taps.InstallPolicy.parse(allowed_taps="tap-postgres, tap-github")
    policy.check("Tap_Postgres")  # canonical names compare
    with pytest.raises(taps.TapError, match="not allowed"):
        taps.install(Path("/nonexistent"), taps.TapSpec("tap-evil", "1.0"), 10, policy)


def test_discovery_runs_in_the_sandbox(installed: taps.InstalledTap, box: sandbox.Sandbox) -> None:
    catalog = taps.discover(installed, {"mode": "discover"}, 60, box)
    assert [s["stream"] for s in catalog["streams"]] == ["probe"]


def test_a_hostile_tap_reaches_nothing_and_the_other_run_carries_on(
    installed: taps.InstalledTap, box: sandbox.Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CANARY, "extractor-environment-canary")  # in this (the extractor's) env
    victim: dict[str, run.RunOutcome] = {}
    victim_config = {"mode": "victim", "sleep": 8, "password": VICTIM_SECRET}
    other = threading.Thread(
        target=lambda: victim.setdefault("outcome", execute(installed, box, victim_config))
    )
    other.start()
    secret_paths = [
        str(RUN_DIR / "skein.env"),
        *(str(p) for p in sorted((RUN_DIR / "secrets").iterdir())),
        str(Path.home() / ".bash_history"),
        "/etc/shadow",
    ]
    outcome = execute(
        installed,
        box,
        {
            "victim_secret": VICTIM_SECRET,
            "needles": [CANARY, "extractor-environment-canary"],
            "secret_paths": secret_paths,
        },
    )
    other.join(60)
    print(outcome.stderr)
    found = hostile_tap.reported(outcome.stderr)
    # Its PID namespace holds bubblewrap's init (root's: unreadable) and the tap itself.
    visible = re.match(r"nothing \((\d+) processes visible", found["environ"])
    assert visible is not None and int(visible[1]) <= 2, found["environ"]
    assert found["kafka"].startswith("refused"), found["kafka"]
    assert "password" in found["control db"], found["control db"]  # SCRAM: the tap may reach it
    # The other client's run was not disturbed: its tap ran to its end (the target then failed
    # on the closed gate port, after the tap's output).
    assert "outcome" in victim
    assert "the tap exited" not in (victim["outcome"].error or "")
    assert VICTIM_SECRET not in outcome.stderr


def test_the_sandbox_runs_taps_as_the_tap_user(box: sandbox.Sandbox, tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("taps run as the extractor's own user when it is not root")
    assert box.user is not None and box.user[0] != 0
    work = tmp_path / "work"
    work.mkdir(mode=0o700)
    box.give(work)
    command = box.command(["id", "-u"], venv=tmp_path, workdir=work)
    import subprocess

    done = subprocess.run(command, capture_output=True, text=True, check=True)
    assert int(done.stdout) == box.user[0]
