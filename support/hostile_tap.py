# ruff: noqa: E501  (the tap program is embedded as source text)
"""A hostile Singer tap, built by the tests as a wheel: it does what a malicious package a client
chose could do from inside an extractor run, reports each attempt on stderr as
``ATTEMPT <what>: <result>`` (a result starting ``OPEN`` or ``FOUND`` is a hole), then behaves
as a tap (one stream, one record) so the run can succeed.

With ``{"mode": "victim", "secret": ..., "sleep": S}`` as its config it is instead a slow,
harmless tap whose config holds a secret the hostile one hunts for. ``extractor_settings``
makes an extractor install it, from a wheel built on the spot.
"""

from __future__ import annotations

import base64
import hashlib
import re
import zipfile
from pathlib import Path

# What the tap attempts, each reported as a line ``ATTEMPT <what>: <result>`` on stderr.
ATTEMPTS = frozenset(
    {"environ", "other runs", "secrets", "kafka", "control db", "s3 filer", "prometheus", "spool"}
)
NAME = "skein-test-hostile-tap"
VERSION = "1.0.0"
COMMAND = "tap-skein-hostile"

TAP_SOURCE = r'''
import glob, json, os, socket, struct, sys, time


def attempt(what, probe):
    try:
        result = probe()
    except Exception as exc:  # a refusal is the expected answer
        result = f"refused ({type(exc).__name__}: {exc})"
    print(f"ATTEMPT {what}: {result}", file=sys.stderr, flush=True)


def read_environs(needles):
    pids = [p for p in os.listdir("/proc") if p.isdigit()]
    readable = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                data = f.read()
        except OSError:
            continue
        readable += 1
        for needle in needles:
            if needle.encode() in data:
                return f"FOUND {needle!r} in /proc/{pid}/environ"
    return f"nothing ({len(pids)} processes visible, {readable} environs readable)"


def hunt_files(secret):
    """Other runs' configs: from other processes' command lines, sibling run directories and
    every temporary directory."""
    paths = set()
    for cmdline in glob.glob("/proc/[0-9]*/cmdline"):
        try:
            args = open(cmdline, "rb").read().split(b"\0")
        except OSError:
            continue
        for i, arg in enumerate(args[:-1]):
            if arg in (b"--config", b"--state", b"--catalog"):
                paths.add(args[i + 1].decode(errors="replace"))
    here = os.path.dirname(os.getcwd())
    for pattern in (f"{here}/*/*", "/tmp/*/*", "/tmp/*", "/var/tmp/*/*", "/dev/shm/*"):
        paths.update(glob.glob(pattern))
    seen = 0
    for path in sorted(paths):
        if os.path.realpath(path).startswith(os.getcwd()):
            continue  # its own files
        try:
            with open(path, "rb") as f:
                data = f.read(1 << 20)
        except OSError:
            continue
        seen += 1
        if secret.encode() in data:
            return f"FOUND the victim's secret in {path}"
    return f"nothing ({len(paths)} candidate paths, {seen} readable)"


def read_files(paths):
    opened = []
    for path in paths:
        try:
            with open(path, "rb") as f:
                f.read(64)
            opened.append(path)
        except OSError:
            continue
    if opened:
        return f"OPEN {opened}"
    return f"refused (none of {len(paths)} readable)"


def kafka(port):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        client = b"hostile"
        body = struct.pack(">hhih", 3, 0, 1, len(client)) + client + struct.pack(">i", 0)
        s.sendall(struct.pack(">i", len(body)) + body)
        s.settimeout(5)
        head = s.recv(4)
        if len(head) < 4:
            return "refused (the broker closed the connection without answering)"
        return f"OPEN (the broker answered a metadata request: {head!r})"


def http(port, path):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(f"GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".encode())
        s.settimeout(5)
        head = s.recv(64)
        if not head:
            return "refused (closed without answering)"
        return f"OPEN (answered {head.splitlines()[0]!r})"


def postgres(port, database):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        params = b"user\0postgres\0database\0" + database.encode() + b"\0\0"
        s.sendall(struct.pack(">ii", 8 + len(params), 196608) + params)
        s.settimeout(5)
        kind = s.recv(1)
        if kind == b"E":
            return "refused (the server answered with an error)"
        code = struct.unpack(">ii", s.recv(8))[1] if kind == b"R" else None
        if code == 0:
            return "OPEN (authenticated without a password)"
        return f"refused (the server asks for a password: authentication request {code})"


def singer(record):
    schema = {"type": "object", "properties": {"id": {"type": "integer"}, "note": {"type": "string"}}}
    print(json.dumps({"type": "SCHEMA", "stream": "probe", "schema": schema, "key_properties": ["id"]}))
    print(json.dumps({"type": "RECORD", "stream": "probe", "record": record}))
    print(json.dumps({"type": "STATE", "value": {"done": True}}), flush=True)


def main():
    args = sys.argv[1:]
    with open(args[args.index("--config") + 1]) as f:
        config = json.load(f)
    if "--discover" in args:
        stream = {
            "tap_stream_id": "probe", "stream": "probe", "key_properties": ["id"],
            "schema": {"type": "object", "properties": {"id": {"type": "integer"}, "note": {"type": "string"}}},
            "metadata": [{"breadcrumb": [], "metadata": {"selected": True, "table-key-properties": ["id"]}}],
        }
        print(json.dumps({"streams": [stream]}))
        return
    if config.get("mode") == "victim":
        time.sleep(float(config.get("sleep", 20)))
        singer({"id": 1, "note": "victim"})
        return
    attempt("environ", lambda: read_environs(["SKEIN_", *config.get("needles", [])]))
    attempt("other runs", lambda: hunt_files(config["victim_secret"]))
    attempt("secrets", lambda: read_files(config.get("secret_paths", [])))
    attempt("kafka", lambda: kafka(19092))
    attempt("control db", lambda: postgres(5432, "skein"))
    attempt("s3 filer", lambda: http(8888, "/"))  # SeaweedFS's own API: no credentials asked
    attempt("prometheus", lambda: http(9090, "/-/healthy"))
    attempt("spool", lambda: http(8081, "/healthz"))
    singer({"id": 1, "note": "hostile"})
'''


def reported(stderr: str) -> dict[str, str]:
    """Each attempt the tap reported on ``stderr`` with its result; it fails when one is missing
    or one got through (a result starting ``OPEN`` or ``FOUND``)."""
    found = dict(re.findall(r"^ATTEMPT ([^:]+): (.*)$", stderr, re.MULTILINE))
    assert set(found) == ATTEMPTS, stderr
    for what, result in found.items():
        assert not result.startswith(("OPEN", "FOUND")), f"{what}: {result}"
    return found


def build_wheel(directory: Path) -> Path:
    """The hostile tap as a wheel in ``directory`` (a pip ``--find-links`` target)."""
    directory.mkdir(parents=True, exist_ok=True)
    dist_info = f"{NAME.replace('-', '_')}-{VERSION}.dist-info"
    files = {
        "skein_hostile_tap/__init__.py": TAP_SOURCE.encode(),
        f"{dist_info}/METADATA": f"Metadata-Version: 2.1\nName: {NAME}\nVersion: {VERSION}\n".encode(),
        f"{dist_info}/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: skein-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
        f"{dist_info}/entry_points.txt": (
            f"[console_scripts]\n{COMMAND} = skein_hostile_tap:main\n".encode()
        ),
    }
    record = []
    for name, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(data)}")
    record.append(f"{dist_info}/RECORD,,")
    files[f"{dist_info}/RECORD"] = ("\n".join(record) + "\n").encode()
    wheel = directory / f"{NAME.replace('-', '_')}-{VERSION}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return wheel


def extractor_settings(directory: Path) -> dict[str, str]:
    """The settings under which an extractor installs this tap, sandboxed: pip finds its wheel
    (built here) in ``directory``/wheels, taps go to ``directory``/taps, bubblewrap required."""
    wheels = directory / "wheels"
    build_wheel(wheels)
    taps = directory / "taps"
    taps.mkdir(parents=True, exist_ok=True)
    return {
        "SKEIN_EXTRACTOR_PIP_FIND_LINKS": str(wheels),
        "SKEIN_EXTRACTOR_TAPS_DIR": str(taps),
        "SKEIN_EXTRACTOR_SANDBOX": "bwrap",
    }
