"""Installing taps, each package and version into its own virtualenv, and running discovery.

Layout under the taps directory (``SKEIN_EXTRACTOR_TAPS_DIR``, outside any checkout):
``<package>/<version>/`` is a virtualenv with a ``.skein-tap.json`` marker written last (its
console script), so a half-finished install is never used; ``<package>.lock`` serialises
installs of one package across processes. Taps never share the extractor's environment: their
dependencies pin freely (old psycopg2, SQLAlchemy, ...).

Installing runs no code of the tap's: wheels only (a source distribution runs its build code
as the installer), except the packages ``SKEIN_EXTRACTOR_ALLOW_SDIST`` names, which are built
from source. ``SKEIN_EXTRACTOR_ALLOWED_TAPS`` restricts which packages clients may use. Anything
that runs the installed code (inspecting its entry points: a wheel's ``.pth`` file runs at
interpreter start; discovery) runs in the sandbox (``sandbox.py``).
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from services.extractor.sandbox import Sandbox, private_file

MARKER = ".skein-tap.json"
# What a tap process may see of the environment: nothing of Skein's (control DSN, secret key).
_PASSED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "SSL_CERT_FILE", "SSL_CERT_DIR")
_ENTRY_POINTS = """
import json, sys
from importlib.metadata import distribution
d = distribution(sys.argv[1])
scripts = sorted(e.name for e in d.entry_points if e.group == "console_scripts")
print(json.dumps({"version": d.version, "scripts": scripts}))
"""


class TapError(RuntimeError):
    """A tap could not be installed or run."""


@dataclass(frozen=True)
class TapSpec:
    package: str  # canonical distribution name
    version: str | None  # exact version, or None for the newest

    @property
    def requirement(self) -> str:
        return self.package if self.version is None else f"{self.package}=={self.version}"


@dataclass(frozen=True)
class InstallPolicy:
    """Which taps may be installed, and how (from the extractor's settings)."""

    allowed_taps: frozenset[str] = frozenset()  # canonical names; empty: any package
    allow_sdist: frozenset[str] = frozenset()  # canonical names that may build from source
    index_url: str | None = None
    find_links: str | None = None

    @classmethod
    def parse(
        cls,
        allowed_taps: str = "",
        allow_sdist: str = "",
        index_url: str | None = None,
        find_links: str | None = None,
    ) -> InstallPolicy:
        def names(value: str) -> frozenset[str]:
            return frozenset(canonicalize_name(n) for n in value.split(",") if n.strip())

        return cls(names(allowed_taps), names(allow_sdist), index_url or None, find_links or None)

    def check(self, package: str) -> None:
        if self.allowed_taps and canonicalize_name(package) not in self.allowed_taps:
            raise TapError(
                f"tap {package!r} is not allowed on this platform (SKEIN_EXTRACTOR_ALLOWED_TAPS: "
                f"{', '.join(sorted(self.allowed_taps))})"
            )

    def pip_options(self) -> list[str]:
        options = ["--only-binary", ":all:"]
        if self.allow_sdist:
            options += ["--no-binary", ",".join(sorted(self.allow_sdist))]
        if self.index_url:
            options += ["--index-url", self.index_url]
        if self.find_links:
            options += ["--find-links", self.find_links]
        return options


@dataclass(frozen=True)
class InstalledTap:
    package: str
    version: str
    executable: Path


def parse_spec(spec: str) -> TapSpec:
    """``PACKAGE`` or ``PACKAGE==VERSION``; anything else (URLs, ranges, extras) is refused."""
    try:
        requirement = Requirement(spec)
    except InvalidRequirement as exc:
        raise TapError(f"--tap {spec!r} is not PACKAGE or PACKAGE==VERSION: {exc}") from None
    if requirement.url or requirement.extras or requirement.marker:
        raise TapError(f"--tap {spec!r}: give a PyPI package name, optionally ==VERSION")
    pins = list(requirement.specifier)
    if not pins:
        return TapSpec(canonicalize_name(requirement.name), None)
    if len(pins) != 1 or pins[0].operator != "==" or "*" in pins[0].version:
        raise TapError(f"--tap {spec!r}: pin an exact version with ==, or none")
    return TapSpec(canonicalize_name(requirement.name), pins[0].version)


def tap_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: os.environ[k] for k in _PASSED_ENV if k in os.environ}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env.update({"TZ": "UTC", "PYTHONUNBUFFERED": "1"})
    env.update(extra or {})
    return env


@contextmanager
def _package_lock(root: Path, package: str) -> Iterator[None]:
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f"{package}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _installed(directory: Path, package: str) -> InstalledTap | None:
    try:
        marker = json.loads((directory / MARKER).read_text())
    except (OSError, ValueError):
        return None
    executable = directory / "bin" / marker["executable"]
    if not executable.exists():
        return None
    return InstalledTap(package, marker["version"], executable)


def installed(root: Path, package: str, version: str, executable: str) -> InstalledTap | None:
    """The cached install of exactly this package and version, if complete."""
    found = _installed(root / package / version, package)
    return found if found is not None and found.executable.name == executable else None


def _choose_script(package: str, scripts: list[str]) -> str:
    if len(scripts) == 1:
        return scripts[0]
    taps = [s for s in scripts if s.startswith("tap")]
    if len(taps) == 1:
        return taps[0]
    raise TapError(f"{package} installs no single tap command (console scripts: {scripts})")


def resolve_version(
    spec: TapSpec, timeout_s: float = 120.0, policy: InstallPolicy | None = None
) -> str:
    """The exact version ``spec`` names, or the newest the package index offers."""
    policy = policy or InstallPolicy()
    policy.check(spec.package)
    if spec.version is not None:
        return spec.version
    report = _run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--dry-run",
            "--ignore-installed",
            "--no-deps",
            "--quiet",
            "--disable-pip-version-check",
            "--no-input",
            "--report",
            "-",
            *policy.pip_options(),
            spec.package,
        ],
        timeout_s,
        f"find the newest version of {spec.package}",
    )
    try:
        return str(json.loads(report)["install"][0]["metadata"]["version"])
    except (ValueError, KeyError, IndexError):
        raise TapError(f"pip did not report a version for {spec.package}") from None


def install(
    root: Path,
    spec: TapSpec,
    timeout_s: float = 600.0,
    policy: InstallPolicy | None = None,
    sandbox: Sandbox | None = None,
) -> InstalledTap:
    """The tap's virtualenv, installed now unless this package and version already is."""
    policy = policy or InstallPolicy()
    sandbox = sandbox or Sandbox(None, None)
    version = resolve_version(spec, timeout_s, policy)
    with _package_lock(root, spec.package):
        directory = root / spec.package / version
        found = _installed(directory, spec.package)
        if found is not None:
            return found
        # No marker: nothing, or an install that was interrupted. Start clean.
        shutil.rmtree(directory, ignore_errors=True)
        try:
            _run([sys.executable, "-m", "venv", str(directory)], timeout_s, "create a virtualenv")
            python = str(directory / "bin" / "python")
            _run(
                [
                    python,
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                    "--no-input",
                    *policy.pip_options(),
                    f"{spec.package}=={version}",
                ],
                timeout_s,
                f"install {spec.package}=={version} (wheels only, see SKEIN_EXTRACTOR_ALLOW_SDIST)",
            )
            inspect = [python, "-c", _ENTRY_POINTS, spec.package]
            info = json.loads(_sandboxed(sandbox, directory, inspect, {}, 60, "inspect it"))
            script = _choose_script(spec.package, list(info["scripts"]))
            (directory / MARKER).write_text(json.dumps({"version": version, "executable": script}))
        except BaseException:
            shutil.rmtree(directory, ignore_errors=True)
            raise
        found = _installed(directory, spec.package)
        assert found is not None
        return found


def _sandboxed(
    sandbox: Sandbox,
    venv: Path,
    command: list[str],
    files: Mapping[str, Any],
    timeout_s: float,
    what: str,
) -> str:
    """Run tap code in ``sandbox`` in a private directory holding ``files`` (JSON, 0600)."""
    with tempfile.TemporaryDirectory(prefix="skein-tap-") as tmp:
        work = Path(tmp)
        for name, content in files.items():
            private_file(work, name, content)
        sandbox.give(work)
        wrapped = sandbox.command(
            [a.replace("{work}", tmp) for a in command], venv=venv, workdir=work
        )
        return _run(wrapped, timeout_s, what, {"TMPDIR": tmp, "HOME": tmp}, cwd=work)


def _run(
    command: list[str],
    timeout_s: float,
    what: str,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> str:
    try:
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
            env=tap_env(env),
            cwd=cwd,
        )
    except subprocess.TimeoutExpired:
        raise TapError(f"could not {what}: no answer within {timeout_s:g} s") from None
    except OSError as exc:  # bwrap, setpriv or the tap itself missing
        raise TapError(f"could not {what}: {exc}") from None
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-15:])
        raise TapError(f"could not {what} (exit {done.returncode}):\n{tail}")
    return done.stdout


def discover(
    tap: InstalledTap,
    config: Mapping[str, Any],
    timeout_s: float = 300.0,
    sandbox: Sandbox | None = None,
) -> Any:
    """The tap's catalog (``--discover``), in the sandbox, its config in a private file."""
    out = _sandboxed(
        sandbox or Sandbox(None, None),
        tap.executable.parent.parent,
        [str(tap.executable), "--config", "{work}/config.json", "--discover"],
        {"config.json": dict(config)},
        timeout_s,
        f"discover streams with {tap.package} (check the config)",
    )
    try:
        return json.loads(out)
    except ValueError:
        raise TapError(f"{tap.package} --discover did not print a JSON catalog") from None


_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


def check_name(name: str) -> str:
    """An integration's name: letters, digits, ``_ . -``, up to 100 characters."""
    if not _NAME.match(name):
        raise TapError(
            f"integration name {name!r}: 1-100 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit"
        )
    return name
