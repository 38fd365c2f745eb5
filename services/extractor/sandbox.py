"""Where tap code runs: a tap is code a client chose, so it runs sandboxed.

Every process that runs tap code (discovery, the inspection of a fresh install, each run) goes
through ``Sandbox.command``:

- **as a dedicated unprivileged user** (``SKEIN_EXTRACTOR_TAP_USER``, default ``skein-tap``)
  when this process may switch users (it runs as root); otherwise as this process's own user;
- **in a bubblewrap namespace** (``SKEIN_EXTRACTOR_SANDBOX``: ``auto`` uses ``bwrap`` when this
  machine lets it make namespaces, ``bwrap`` requires it, ``none`` never): a fresh root holding
  only ``/usr``, ``/etc`` and the base Python (read-only), the tap's virtualenv (read-only) and
  the run's own directory; its own ``/tmp``, ``/dev`` and PID namespace (so ``/proc`` shows
  only the tap's own processes); the network is shared (taps read from the network; the
  platform's loopback ports are closed to the tap user, see below);
- **with only its own environment** (``taps.tap_env``: no ``SKEIN_*`` variable), its files in
  a private directory owned by the tap user, and a new session; it dies with its parent.

Without bubblewrap (root only: otherwise ``auto`` refuses, and only ``none`` runs taps as the
extractor's own user), the tap user still cannot read the extractor's environment, its
secrets or files of other users; runs of the same tap user could then see each other's
directories, which only bubblewrap hides, and the taps directory must be one the tap user can
traverse. On the local stack a firewall rule (deploy/local/stack.sh, ``tap_firewall``) also
keeps the tap user off every loopback port but the Postgres clusters' and DNS
(``docs/architecture.md``, Security).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import pwd
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("skein.extractor.sandbox")


class SandboxError(RuntimeError):
    """The sandbox the settings ask for cannot be made on this machine."""


@dataclass(frozen=True)
class Sandbox:
    bwrap: str | None  # bubblewrap's path, when taps run in a namespace
    user: tuple[int, int] | None  # (uid, gid) taps run as, when this process switches to it

    @property
    def description(self) -> str:
        who = f"uid {self.user[0]}" if self.user else f"the extractor's uid {os.getuid()}"
        where = "a bubblewrap namespace" if self.bwrap else "no namespace"
        return f"taps run as {who} in {where}"

    def command(self, argv: Sequence[str], *, venv: Path, workdir: Path) -> list[str]:
        """``argv`` wrapped to run in the sandbox: it sees ``venv`` read-only and ``workdir``
        (its current directory, writable)."""
        inner = list(argv)
        if self.user is not None:
            uid, gid = self.user
            # bubblewrap started by root keeps only these two capabilities for setpriv, which
            # drops them (a uid change from 0 clears them) along with the bounding set.
            inner = [
                "setpriv",
                f"--reuid={uid}",
                f"--regid={gid}",
                "--clear-groups",
                "--no-new-privs",
                "--pdeathsig=SIGKILL",  # a uid change clears the parent-death signal: set again
                "--inh-caps=-all",
                "--bounding-set=-all",
                "--",
                *inner,
            ]
        if self.bwrap is None:
            return inner
        args = [self.bwrap, "--die-with-parent", "--new-session"]
        args += ["--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
        if self.user is not None:
            args += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
        for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
            if os.path.islink(top):
                args += ["--symlink", os.readlink(top), top]
            elif os.path.isdir(top):
                args += ["--ro-bind", top, top]
        args += ["--ro-bind", "/usr", "/usr", "--ro-bind", "/etc", "/etc"]
        args += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]  # noqa: S108 (its own)
        # The Python the tap's virtualenv was made from (this process's base: pyenv, /opt, ...).
        base = Path(sys.base_prefix)
        extra = [] if base.is_relative_to("/usr") else [base]
        bound = [*extra, venv]
        # Their parents exist in the new root only as traversable directories (bubblewrap would
        # copy the modes of the real ones: /root is 0700 to the tap user).
        parents = {p for path in (*bound, workdir) for p in path.parents if p != Path("/")}
        for parent in sorted(parents, key=lambda p: len(p.parts)):
            if not parent.is_relative_to("/usr") and not parent.is_relative_to("/etc"):
                args += ["--perms", "0755", "--dir", str(parent)]
        for path in bound:
            args += ["--ro-bind", str(path), str(path)]
        args += ["--bind", str(workdir), str(workdir), "--chdir", str(workdir)]
        return [*args, "--", *inner]

    def give(self, path: Path) -> None:
        """Hand ``path`` (a run's directory, and what is in it) to the tap user."""
        if self.user is None:
            return
        uid, gid = self.user
        os.chown(path, uid, gid)
        if path.is_dir():
            for child in path.iterdir():
                os.chown(child, uid, gid)


def private_file(directory: Path, name: str, content: Any) -> Path:
    """``content`` as JSON in a new file of ``directory`` only its owner may read (0600)."""
    path = directory / name
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(content, f)
    return path


def choose(mode: str, tap_user: str) -> Sandbox:
    """The sandbox ``SKEIN_EXTRACTOR_SANDBOX`` and ``SKEIN_EXTRACTOR_TAP_USER`` ask for, as far
    as this machine allows (``SandboxError`` where a required part cannot be had)."""
    user = None
    if os.geteuid() == 0:
        try:
            entry = pwd.getpwnam(tap_user)
        except KeyError:
            raise SandboxError(
                f"the tap user {tap_user!r} does not exist: create it (useradd --system "
                f"--no-create-home --shell /usr/sbin/nologin {tap_user}) or set "
                "SKEIN_EXTRACTOR_TAP_USER"
            ) from None
        if entry.pw_uid == 0:
            raise SandboxError(f"the tap user {tap_user!r} is root")
        user = (entry.pw_uid, entry.pw_gid)
    bwrap = None
    if mode != "none":
        bwrap = _usable_bwrap()
        if bwrap is None and mode == "bwrap":
            raise SandboxError(
                "SKEIN_EXTRACTOR_SANDBOX=bwrap but bubblewrap is missing or cannot make "
                "namespaces here (apt-get install bubblewrap; unprivileged user namespaces)"
            )
    sandbox = Sandbox(bwrap, user)
    if bwrap is None and user is None and mode != "none":
        # The tap would be this process's own user, able to read its environment (the control
        # DSN, the secret key) through /proc and the target's gate token: refuse rather than
        # run it so. SKEIN_EXTRACTOR_SANDBOX=none accepts that explicitly.
        raise SandboxError(
            "taps cannot be isolated here: bubblewrap cannot make namespaces and the extractor "
            "is not root (to run them as SKEIN_EXTRACTOR_TAP_USER); fix either, or set "
            "SKEIN_EXTRACTOR_SANDBOX=none to run taps as the extractor's own user"
        )
    if bwrap is None:
        log.warning("taps are not in a namespace: %s", sandbox.description)
    return sandbox


@functools.cache
def _usable_bwrap() -> str | None:
    """bubblewrap's path if it can make the namespaces ``command`` uses on this machine."""
    path = shutil.which("bwrap")
    if path is None:
        return None
    probe = [path, "--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev", "--unshare-pid"]
    try:
        done = subprocess.run([*probe, "true"], capture_output=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        log.warning("bubblewrap cannot run here: %s", done.stderr.decode(errors="replace")[-500:])
        return None
    return path
