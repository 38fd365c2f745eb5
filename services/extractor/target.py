"""The built-in Singer target: a tap's messages in, Import API batch requests to the gate out.

It is an outside client of the gate like any other (``POST /v2/import/batch`` with the client's
own token). Its stdout carries only what the extractor must know, one JSON object a line:

- ``{"type": "STATE", "value": ..., "records": {stream: n}}``: a Singer STATE every record
  before which the gate has acknowledged (2xx); ``records`` counts acknowledged records so far;
- ``{"type": "DONE", "records": {...}}`` at the end of the tap's output, everything sent;
- ``{"type": "ERROR", "message": ..., "records": {...}}`` before a non-zero exit.

A STATE is held back until all records read before it are acknowledged: a request is sent
when a table's buffer is full, and pending state is flushed at most ``flush_interval_s`` after
it arrived, at the latest at the end. 5xx, 429 and unreachable gates are retried with back-off
for ``gate_retry_window_s``; any other 4xx fails at once (retrying would get the same answer).

``python -m services.extractor.target CONFIG`` where CONFIG is a JSON file with ``gate_url``,
``token`` and the batch/retry settings.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import IO, Any

import httpx
import orjson

EXIT_TEMPORARY = 75  # EX_TEMPFAIL: the gate was unavailable for the whole retry window
EXIT_DATA = 65  # EX_DATAERR: the tap's output or the gate's 4xx


class TargetError(Exception):
    """The run cannot go on; ``temporary`` if a later retry may succeed."""

    def __init__(self, message: str, temporary: bool) -> None:
        super().__init__(message)
        self.temporary = temporary


@dataclass(frozen=True)
class TargetConfig:
    gate_url: str
    token: str
    batch_records: int = 5000
    batch_bytes: int = 4 * 1024 * 1024
    flush_interval_s: float = 10.0
    gate_retry_window_s: float = 300.0
    gate_timeout_s: float = 60.0
    # A reset run (``skein integrations reset``): records of these streams (None: every one)
    # that carry no version of their own get this one, and the end of the tap's output
    # activates it for each, so the table is swapped in whole only by a run that got there.
    reset_version: int | None = None
    reset_streams: list[str] | None = None


@dataclass
class _Buffer:
    """One table's records waiting to be sent, under one schema, key list and version."""

    schema: dict[str, Any]
    key_names: list[str]
    version: int | None
    messages: list[bytes] = field(default_factory=list)
    size: int = 0


class Sequencer:
    """Strictly increasing 19-digit sequences from the clock (as target-stitch sends)."""

    def __init__(self, clock_ns: Callable[[], int] = time.time_ns) -> None:
        self._clock = clock_ns
        self._last = 0

    def __call__(self) -> int:
        self._last = max(self._last + 1, self._clock())
        return self._last


Post = Callable[[bytes], httpx.Response]


class Target:
    """Turns Singer messages into batch requests; ``emit`` receives the stdout lines."""

    def __init__(
        self,
        config: TargetConfig,
        post: Post,
        emit: Callable[[dict[str, Any]], None],
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        sequencer: Callable[[], int] | None = None,
    ) -> None:
        self._config = config
        self._post = post
        self._emit = emit
        self._clock = clock
        self._sleep = sleep
        self._sequence = sequencer or Sequencer()
        self._schemas: dict[str, tuple[dict[str, Any], list[str]]] = {}
        self._buffers: dict[str, _Buffer] = {}
        self._pending_state: Any = None
        self._has_pending_state = False
        self._state_since: float | None = None
        self.acknowledged: dict[str, int] = {}
        # Streams a reset run need not activate: the tap versions their records itself.
        self._settled: set[str] = set()

    # --- messages ----------------------------------------------------------------------------

    def handle(self, line: bytes) -> None:
        """One line of the tap's output."""
        if not line.strip():
            return
        try:
            message = orjson.loads(line)
        except orjson.JSONDecodeError:
            raise TargetError(
                f"the tap wrote a line that is not JSON: {line[:200]!r}", False
            ) from None
        if not isinstance(message, dict):
            raise TargetError("the tap wrote a JSON value that is not a Singer message", False)
        kind = message.get("type")
        if kind == "RECORD":
            self._record(message)
        elif kind == "SCHEMA":
            self._schema(message)
        elif kind == "STATE":
            self._state(message.get("value"))
        elif kind == "ACTIVATE_VERSION":
            self._activate_version(message)
        elif kind == "BATCH":
            raise TargetError("BATCH messages are not supported: configure the tap without", False)
        else:
            raise TargetError(f"unknown Singer message type {kind!r}", False)

    def finish(self) -> None:
        """The tap's output ended: send everything and emit the last state, then DONE naming
        the streams a reset run re-extracted under its version. Their ACTIVATE_VERSION is not
        sent here: the tap may yet exit with an error, and only the run, once it knows the tap
        succeeded, swaps them in (``activate``)."""
        self._flush_all()
        done: dict[str, Any] = {"type": "DONE", "records": dict(self.acknowledged)}
        if self._config.reset_version is not None:
            done["activate"] = [
                {"stream": stream, "schema": schema, "key_names": keys}
                for stream, (schema, keys) in self._schemas.items()
                if self._resets(stream) and stream not in self._settled
            ]
        self._emit(done)

    def activate(self, stream: str, schema: dict[str, Any], keys: list[str], version: int) -> None:
        """Send ``stream``'s ACTIVATE_VERSION for ``version`` (after everything before it)."""
        activate = orjson.dumps({"action": "activate_version", "sequence": self._sequence()})
        self._send(stream, _Buffer(schema, keys, version, [activate], len(activate)), count=0)

    def _resets(self, stream: str) -> bool:
        wanted = self._config.reset_streams
        return self._config.reset_version is not None and (wanted is None or stream in wanted)

    def _stream(self, message: dict[str, Any]) -> str:
        stream = message.get("stream")
        if not isinstance(stream, str) or not stream:
            raise TargetError(f"a {message.get('type')} message without a stream name", False)
        return stream

    def _schema(self, message: dict[str, Any]) -> None:
        stream = self._stream(message)
        schema = message.get("schema")
        keys = message.get("key_properties") or []
        if not isinstance(schema, dict) or not isinstance(keys, list):
            raise TargetError(f"SCHEMA of {stream} needs a schema object and key_properties", False)
        if self._schemas.get(stream) != (schema, keys):
            self._flush(stream)  # one request carries one schema
            self._schemas[stream] = (schema, [str(k) for k in keys])

    def _record(self, message: dict[str, Any]) -> None:
        stream = self._stream(message)
        if stream not in self._schemas:
            raise TargetError(f"RECORD of {stream} before its SCHEMA", False)
        version = message.get("version")
        if version is not None:
            self._settled.add(stream)
        elif self._resets(stream):
            version = self._config.reset_version
        buffer = self._buffers.get(stream)
        if buffer is not None and buffer.version != version:
            self._flush(stream)
            buffer = None
        if buffer is None:
            schema, keys = self._schemas[stream]
            buffer = self._buffers[stream] = _Buffer(schema, keys, version)
        out: dict[str, Any] = {
            "action": "upsert",
            "sequence": self._sequence(),
            "data": message.get("record"),
        }
        if message.get("time_extracted"):
            out["time_extracted"] = message["time_extracted"]
        encoded = orjson.dumps(out)
        if buffer.messages and buffer.size + len(encoded) > self._config.batch_bytes:
            self._flush_all()
            self._record(message)
            return
        buffer.messages.append(encoded)
        buffer.size += len(encoded) + 1
        if len(buffer.messages) >= self._config.batch_records:
            self._flush_all()

    def _state(self, value: Any) -> None:
        self._pending_state = value
        self._has_pending_state = True
        now = self._clock()
        if self._state_since is None:
            self._state_since = now
        if not self._buffers or now - self._state_since >= self._config.flush_interval_s:
            self._flush_all()

    def _activate_version(self, message: dict[str, Any]) -> None:
        stream = self._stream(message)
        if stream not in self._schemas:
            raise TargetError(f"ACTIVATE_VERSION of {stream} before its SCHEMA", False)
        self._flush_all()  # everything before it is in the table first
        schema, keys = self._schemas[stream]
        activate = orjson.dumps({"action": "activate_version", "sequence": self._sequence()})
        self._send(
            stream, _Buffer(schema, keys, message.get("version"), [activate], len(activate)), 0
        )

    # --- sending -----------------------------------------------------------------------------

    def _flush_all(self) -> None:
        for stream in list(self._buffers):
            self._flush(stream)
        if self._has_pending_state:
            self._emit(
                {"type": "STATE", "value": self._pending_state, "records": dict(self.acknowledged)}
            )
            self._has_pending_state = False
            self._state_since = None

    def _flush(self, stream: str) -> None:
        buffer = self._buffers.pop(stream, None)
        if buffer is not None and buffer.messages:
            self._send(stream, buffer, count=len(buffer.messages))

    def _send(self, stream: str, buffer: _Buffer, count: int) -> None:
        body = b"".join(
            [
                b'{"table_name":',
                orjson.dumps(stream),
                b',"schema":',
                orjson.dumps(buffer.schema),
                b',"key_names":',
                orjson.dumps(buffer.key_names),
                (b',"table_version":' + orjson.dumps(buffer.version))
                if buffer.version is not None
                else b"",
                b',"messages":[',
                b",".join(buffer.messages),
                b"]}",
            ]
        )
        self._deliver(stream, body)
        self.acknowledged[stream] = self.acknowledged.get(stream, 0) + count

    def _deliver(self, stream: str, body: bytes) -> None:
        deadline = self._clock() + self._config.gate_retry_window_s
        attempt = 0
        while True:
            attempt += 1
            try:
                response = self._post(body)
            except httpx.HTTPError as exc:
                problem, retry_after = f"gate unreachable: {type(exc).__name__}: {exc}", None
            else:
                if 200 <= response.status_code < 300:
                    return
                detail = response.text[:500]
                if response.status_code < 500 and response.status_code != 429:
                    raise TargetError(
                        f"the gate refused a batch of {stream} with {response.status_code}: "
                        f"{detail}",
                        False,
                    )
                problem = f"the gate answered {response.status_code}: {detail}"
                retry_after = _retry_after(response)
            wait = min(10.0, 0.5 * 2 ** min(attempt - 1, 10))
            if retry_after is not None:
                wait = max(wait, min(retry_after, 60.0))
            if self._clock() + wait > deadline:
                raise TargetError(
                    f"{problem} (gave up after {attempt} attempts in "
                    f"{self._config.gate_retry_window_s:g} s)",
                    True,
                )
            self._sleep(wait)


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return float(response.headers.get("Retry-After", ""))
    except ValueError:
        return None


def _gate(config: TargetConfig) -> httpx.Client:
    return httpx.Client(
        base_url=config.gate_url.rstrip("/"),
        timeout=config.gate_timeout_s,
        headers={
            "Authorization": f"Bearer {config.token}",
            "Content-Type": "application/json",
            "User-Agent": "skein-extractor-target",
        },
    )


def _ignore(_: dict[str, Any]) -> None:
    pass


def swap_in(config: TargetConfig, streams: list[dict[str, Any]]) -> None:
    """Swap in the tables a reset run re-extracted: ``streams`` as listed by its DONE. Called
    by the run only once the tap exited 0 and the target finished (raises ``TargetError``)."""
    assert config.reset_version is not None
    with _gate(config) as client:
        target = Target(config, lambda body: client.post("/v2/import/batch", content=body), _ignore)
        for item in streams:
            target.activate(item["stream"], item["schema"], item["key_names"], config.reset_version)


def run(config: TargetConfig, lines: Iterable[bytes], out: IO[bytes]) -> int:
    """Feed the tap's output through a Target; return the exit code."""

    def emit(obj: dict[str, Any]) -> None:
        out.write(orjson.dumps(obj) + b"\n")
        out.flush()

    with _gate(config) as client:
        target = Target(config, lambda body: client.post("/v2/import/batch", content=body), emit)
        try:
            for line in lines:
                target.handle(line)
            target.finish()
        except TargetError as exc:
            emit(
                {
                    "type": "ERROR",
                    "message": str(exc),
                    "temporary": exc.temporary,
                    "records": dict(target.acknowledged),
                }
            )
            return EXIT_TEMPORARY if exc.temporary else EXIT_DATA
    return 0


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        sys.stderr.write("usage: python -m services.extractor.target CONFIG.json\n")
        return 2
    with open(argv[1], "rb") as f:
        config = TargetConfig(**orjson.loads(f.read()))
    return run(config, sys.stdin.buffer, sys.stdout.buffer)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
