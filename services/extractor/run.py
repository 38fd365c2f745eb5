"""One run: ``tap | built-in target`` as child processes, the target's STATE saved as it comes.

The tap's stdout is the target's stdin (an OS pipe; the extractor does not touch the records).
The target's stdout is read here: each STATE it emits was acknowledged by the gate for every
record before it, and is handed to ``save_state`` at once. The tap's stderr is kept (its
tail, secrets redacted). The tap runs in its sandbox (``sandbox.py``) in a private directory
holding its config, catalog and state files (mode 0600, owned by the tap user); the target's
config (the client's gate token) is in another the tap cannot reach. Neither child has any of
Skein's environment, and both die with the extractor (``PR_SET_PDEATHSIG``) so a killed
extractor leaves no orphans behind.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from services.extractor.redact import Redactor
from services.extractor.sandbox import Sandbox, private_file
from services.extractor.taps import tap_env
from services.extractor.target import EXIT_TEMPORARY, TargetConfig, TargetError, swap_in

log = logging.getLogger("skein.extractor")
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> Callable[[], None] | None:
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        prctl = ctypes.CDLL(name, use_errno=True).prctl
    except (OSError, AttributeError):
        return None

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)

    return preexec


_PREEXEC = _die_with_parent()  # looked up before any fork: nothing to load in the child


@dataclass
class RunOutcome:
    succeeded: bool
    records: dict[str, int]
    error: str | None
    stderr: str
    states_saved: int = 0


@dataclass
class RunRequest:
    executable: Path
    config: dict[str, Any]
    catalog: dict[str, Any]
    state: Any
    target_config: dict[str, Any]
    timeout_s: float
    redactor: Redactor
    stderr_limit_bytes: int
    save_state: Callable[[Any, dict[str, int]], None]
    on_records: Callable[[int], None] = lambda n: None
    cancel: threading.Event = field(default_factory=threading.Event)
    sandbox: Sandbox = field(default_factory=lambda: Sandbox(None, None))

    @property
    def venv(self) -> Path:
        return self.executable.parent.parent


class _Tail:
    """The last ``limit`` characters of a stream, read on a thread, each line redacted."""

    def __init__(self, stream: IO[bytes], redactor: Redactor, limit: int) -> None:
        self._lines: deque[str] = deque()
        self._size = 0
        self._limit = limit
        self._dropped = False
        self._redact = redactor
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[bytes]) -> None:
        for raw in stream:
            line = self._redact(raw.decode("utf-8", "replace"))
            self._lines.append(line)
            self._size += len(line)
            while self._size > self._limit and len(self._lines) > 1:
                self._size -= len(self._lines.popleft())
                self._dropped = True
        stream.close()

    def text(self, wait_s: float = 5.0) -> str:
        self._thread.join(wait_s)
        head = "[earlier output dropped]\n" if self._dropped else ""
        return head + "".join(self._lines)

    def last_line(self) -> str:
        return next((line.strip() for line in reversed(self._lines) if line.strip()), "")


def _stop(process: subprocess.Popen[bytes], grace_s: float = 5.0) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(grace_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def execute(request: RunRequest) -> RunOutcome:
    """Run the pipeline to its end, its timeout, or ``request.cancel``."""
    with (
        tempfile.TemporaryDirectory(prefix="skein-run-") as tmp,
        tempfile.TemporaryDirectory(prefix="skein-target-") as target_tmp,
    ):
        work = Path(tmp)
        config_path = private_file(work, "config.json", request.config)
        catalog_path = private_file(work, "catalog.json", request.catalog)
        target_path = private_file(Path(target_tmp), "target.json", request.target_config)
        tap_command = [
            str(request.executable),
            "--config",
            str(config_path),
            "--catalog",
            str(catalog_path),
        ]
        if request.state is not None:
            tap_command += ["--state", str(private_file(work, "state.json", request.state))]
        env = tap_env({"TMPDIR": str(work), "HOME": str(work)})
        request.sandbox.give(work)
        tap = subprocess.Popen(
            request.sandbox.command(tap_command, venv=request.venv, workdir=work),
            cwd=work,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            preexec_fn=_PREEXEC,  # one prctl call: async-signal-safe
        )
        assert tap.stdout is not None and tap.stderr is not None
        target_env = {**tap_env({"TMPDIR": target_tmp}), "PYTHONPATH": os.pathsep.join(sys.path)}
        target = subprocess.Popen(
            [sys.executable, "-m", "services.extractor.target", str(target_path)],
            cwd=target_tmp,
            env=target_env,
            stdin=tap.stdout,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            preexec_fn=_PREEXEC,
        )
        tap.stdout.close()  # the target owns the read end now: the tap sees EPIPE if it dies
        assert target.stdout is not None and target.stderr is not None
        tap_err = _Tail(tap.stderr, request.redactor, request.stderr_limit_bytes)
        target_err = _Tail(target.stderr, request.redactor, 16 * 1024)
        watchdog = _Watchdog(request, (tap, target))
        try:
            outcome = _follow(request, target.stdout)
        except Exception as exc:  # the control DB refused the state: stop, keep the last one
            _stop(target)
            outcome = _Followed(error=f"could not save the state: {type(exc).__name__}: {exc}")
        target.wait()
        # The target ends first: its input ended (the tap is exiting), or it failed (the tap's
        # work is useless now: stop it rather than wait for its next write to fail).
        if target.returncode != 0 or not outcome.done:
            _stop(tap)
        try:
            tap.wait(30)
        except subprocess.TimeoutExpired:
            _stop(tap)
        watchdog.done.set()
        stderr = tap_err.text()
        outcome.stderr = stderr
        outcome.succeeded = False
        if watchdog.fired is not None:
            outcome.error = watchdog.fired
        elif outcome.error is not None:
            pass  # the target said why
        elif target.returncode != 0:
            outcome.error = (
                f"the built-in target exited with {target.returncode}: "
                f"{target_err.text(1.0).strip()[-2000:]}"
            )
        elif tap.returncode != 0:
            outcome.error = f"the tap exited with {tap.returncode}: {tap_err.last_line()[-2000:]}"
        elif not outcome.done:
            outcome.error = "the built-in target ended without finishing"
        else:
            outcome.error = _activate(request, outcome.activate)
            outcome.succeeded = outcome.error is None
        if target.returncode == EXIT_TEMPORARY and outcome.error:
            outcome.error = f"gate unavailable: {outcome.error}"
        return outcome.result()


def _activate(request: RunRequest, streams: list[dict[str, Any]] | None) -> str | None:
    """A reset run that succeeded swaps its re-extracted tables in; None, or why it could not."""
    if not streams:
        return None
    try:
        swap_in(TargetConfig(**request.target_config), streams)
    except TargetError as exc:
        return f"could not swap in the re-extracted tables: {request.redactor(str(exc))}"
    return None


class _Watchdog:
    """Stops the children at the run's timeout, or when the extractor is stopping."""

    def __init__(self, request: RunRequest, processes: tuple[subprocess.Popen[bytes], ...]) -> None:
        self.done = threading.Event()
        self.fired: str | None = None
        self._request = request
        self._processes = processes
        threading.Thread(target=self._watch, daemon=True).start()

    def _watch(self) -> None:
        deadline = time.monotonic() + self._request.timeout_s
        while not self.done.is_set():
            if self._request.cancel.is_set():
                self.fired = (
                    "stopped (on request, or the extractor is stopping); the next run resumes"
                    " from the saved state"
                )
                break
            if time.monotonic() >= deadline:
                self.fired = f"timed out after {self._request.timeout_s:g} s"
                break
            self.done.wait(0.2)
        else:
            return
        for process in self._processes:
            _stop(process)


@dataclass
class _Followed:
    records: dict[str, int] = field(default_factory=dict)
    error: str | None = None
    done: bool = False
    states_saved: int = 0
    stderr: str = ""
    succeeded: bool = False
    activate: list[dict[str, Any]] | None = None

    def result(self) -> RunOutcome:
        return RunOutcome(self.succeeded, self.records, self.error, self.stderr, self.states_saved)


def _follow(request: RunRequest, stdout: IO[bytes]) -> _Followed:
    """Read the target's reports: save each STATE, count records."""
    followed = _Followed()
    for line in stdout:
        try:
            message = orjson.loads(line)
        except orjson.JSONDecodeError:
            log.warning("target wrote a line that is not JSON", extra={"line": line[:200]})
            continue
        kind = message.get("type")
        records = {str(k): int(v) for k, v in (message.get("records") or {}).items()}
        if kind in ("STATE", "DONE", "ERROR") and records:
            request.on_records(sum(records.values()) - sum(followed.records.values()))
            followed.records = records
        if kind == "STATE":
            request.save_state(message.get("value"), records)
            followed.states_saved += 1
        elif kind == "DONE":
            followed.done = True
            followed.activate = message.get("activate")
        elif kind == "ERROR":
            followed.error = request.redactor(str(message.get("message")))
    stdout.close()
    return followed
