"""The ``skein`` command line as an operator runs it: one JSON object printed per command."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson

SKEIN = Path(sys.executable).with_name("skein")


def skein(
    *args: str, env: dict[str, str] | None = None, stdin: str | None = None
) -> tuple[int, dict[str, Any]]:
    """Run the CLI; return its exit code and the one JSON object it printed."""
    done = subprocess.run(
        [str(SKEIN), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        input=stdin,
        env={**os.environ, **(env or {})},
    )
    lines = done.stdout.splitlines()
    assert len(lines) == 1, f"expected one JSON line, got {done.stdout!r} (stderr {done.stderr!r})"
    out: dict[str, Any] = orjson.loads(lines[0])
    return done.returncode, out


def ok(*args: str, env: dict[str, str] | None = None, stdin: str | None = None) -> dict[str, Any]:
    """Run the CLI and expect success; its JSON object."""
    code, out = skein(*args, env=env, stdin=stdin)
    assert code == 0, out
    assert "error" not in out
    return out
