"""The tap sandbox fails closed: without a namespace and without a user to switch to, taps
would run as the extractor itself, so the extractor refuses unless told ``none``."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.extractor import sandbox


def test_no_namespace_and_no_other_user_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sandbox.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(sandbox, "_usable_bwrap", lambda: None)
    with pytest.raises(sandbox.SandboxError, match="cannot be isolated"):
        sandbox.choose("auto", "skein-tap")
    with pytest.raises(sandbox.SandboxError, match="bubblewrap"):
        sandbox.choose("bwrap", "skein-tap")
    assert sandbox.choose("none", "skein-tap") == sandbox.Sandbox(None, None)


def test_the_command_drops_to_the_tap_user_inside_a_fresh_root(tmp_path: Path) -> None:
    box = sandbox.Sandbox("/usr/bin/bwrap", (999, 995))
    command = box.command(["tap", "--config", "c.json"], venv=tmp_path / "venv", workdir=tmp_path)
    assert command[0] == "/usr/bin/bwrap"
    inner = command[command.index("--") + 1 :]
    assert inner[0] == "setpriv" and "--reuid=999" in inner and "--pdeathsig=SIGKILL" in inner
    assert inner[-3:] == ["tap", "--config", "c.json"]
    for flag in ("--unshare-pid", "--new-session", "--die-with-parent"):
        assert flag in command
    binds = [command[i + 1] for i, a in enumerate(command) if a == "--bind"]
    assert binds == [str(tmp_path)]  # the only writable place: the run's own directory
    assert command[command.index("--tmpfs") : command.index("--tmpfs") + 2] == ["--tmpfs", "/tmp"]
