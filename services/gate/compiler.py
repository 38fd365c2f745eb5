"""Client schemas compiled off the gate's event loop, in a worker process with time and memory
caps, and a per-client budget: one client's costly or failing schemas cost it a 429, never
the other clients their latency.

Compiling a JSON Schema (fastjsonschema generates Python source, which Python then compiles)
takes milliseconds for an ordinary schema and seconds, or gigabytes, for a hostile 250 KB one.
On the event loop that stalled every request of the process. Now:

- the worker process (one per gate process, started on first use, ``spawn``ed) generates and
  compiles the code and sends back the marshalled code object; the gate process only ``exec``s
  it, which defines the functions (fast). The worker runs at nice 19: compiling is background
  work, and a 250 KB schema takes seconds of CPU that the event loops answering requests, Kafka
  and the loaders on the same cores need first. Its caps: ``RLIMIT_AS``
  (``SKEIN_GATE_SCHEMA_COMPILE_MEMORY_BYTES``) and ``SKEIN_GATE_SCHEMA_COMPILE_TIMEOUT_S``
  seconds of *CPU* per schema (a profiling timer whose signal ends the worker: it stops even
  inside one long C call). CPU, not wall time, because at nice 19 on a busy host an ordinary
  schema may wait; a wall-clock backstop (``WALL_FACTOR`` times the cap, at least
  ``WALL_MIN_S``) still ends a worker that never gets the CPU. Past a cap the worker is replaced
  and the schema refused (400);
- per client and gate process: one compile at a time (requests with the same new schema wait
  for its one compile; distinct ones queue behind each other), and within a minute at most
  ``SKEIN_GATE_SCHEMA_COMPILE_BUDGET_S`` seconds of compiling and
  ``SKEIN_GATE_SCHEMA_COMPILE_FAILURES`` refused schemas; past either, a new schema answers 429
  naming ``schema_compiles`` (schemas already compiled keep working). A client is charged the
  worker's CPU seconds for its schema (``Compiled.cpu_s``), not the wall time: waiting behind
  another client's compile, or for a CPU the request handlers hold, costs it nothing.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
import time
from collections import deque
from typing import Any

from services.gate.errors import ApiError
from services.gate.schemas import Compiled, SchemaRejected, compile_to_blob


class CompileWorker:
    """One worker process compiling schemas, one at a time; killed and replaced on a timeout."""

    WALL_FACTOR = 6.0
    WALL_MIN_S = 30.0

    def __init__(self, timeout_s: float, memory_bytes: int) -> None:
        self._timeout_s = timeout_s
        self._memory_bytes = memory_bytes
        self._lock = threading.Lock()
        self._process: Any = None
        self._conn: multiprocessing.connection.Connection | None = None

    def compile(self, schema: dict[str, Any]) -> Compiled:
        """The marshalled code of ``schema``'s validator and the worker's CPU seconds on it;
        raises SchemaRejected (its ``cpu_s`` set too). Blocking: call it from a thread."""
        with self._lock:
            conn = self._ensure()
            before = self._cpu_seconds()
            conn.send(schema)
            too_long = f"schema took longer than {self._timeout_s:g} s to compile"
            if not conn.poll(max(self.WALL_MIN_S, self._timeout_s * self.WALL_FACTOR)):
                spent = self._cpu_seconds() - before  # it never got the CPU: charge what it had
                self._kill()
                raise SchemaRejected(too_long, cpu_s=max(0.0, spent))
            try:
                kind, payload, cpu_s = conn.recv()
            except (EOFError, OSError):
                out_of_cpu = self._exit_signal() == signal.SIGPROF
                self._kill()
                if out_of_cpu:
                    raise SchemaRejected(too_long, cpu_s=self._timeout_s) from None
                raise SchemaRejected(
                    "schema compilation failed (out of memory)", cpu_s=self._timeout_s
                ) from None
        if kind != "ok":
            raise SchemaRejected(payload, cpu_s=cpu_s)
        return Compiled(payload, cpu_s)

    def _cpu_seconds(self) -> float:
        """The worker's CPU seconds so far (user + system, from /proc; 0 where unreadable)."""
        if self._process is None or self._process.pid is None:
            return 0.0
        try:
            with open(f"/proc/{self._process.pid}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def close(self) -> None:
        with self._lock:
            self._kill()

    def _ensure(self) -> multiprocessing.connection.Connection:
        if self._process is None or not self._process.is_alive() or self._conn is None:
            self._kill()
            ctx = multiprocessing.get_context("spawn")
            ours, theirs = ctx.Pipe()
            self._process = ctx.Process(
                target=_serve,
                args=(theirs, self._memory_bytes, self._timeout_s),
                daemon=True,
                name="skein-gate-schema-compiler",
            )
            self._process.start()
            theirs.close()
            self._conn = ours
        return self._conn

    def _exit_signal(self) -> int | None:
        """The signal that ended the worker (after its pipe closed), if one did."""
        if self._process is None:
            return None
        self._process.join(5)
        code = self._process.exitcode
        return -code if code is not None and code < 0 else None

    def _kill(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(OSError):
                self._conn.close()
            self._conn = None
        if self._process is not None:
            with contextlib.suppress(Exception):
                self._process.kill()
                self._process.join(5)
            self._process = None


def _serve(conn: multiprocessing.connection.Connection, memory_bytes: int, cpu_s: float) -> None:
    import resource

    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    # compiling is background work: on a busy host the event loops answering requests come first
    with contextlib.suppress(OSError):
        os.nice(19)
    # SIGPROF's default action ends the process: past cpu_s of CPU on one schema, it does
    signal.signal(signal.SIGPROF, signal.SIG_DFL)
    while True:
        try:
            schema = conn.recv()
        except (EOFError, OSError):
            return
        began = time.process_time()
        try:
            signal.setitimer(signal.ITIMER_PROF, cpu_s)
            try:
                blob = compile_to_blob(schema)
            finally:
                signal.setitimer(signal.ITIMER_PROF, 0)
            conn.send(("ok", blob, time.process_time() - began))
        except SchemaRejected as exc:
            conn.send(("error", str(exc), time.process_time() - began))
        except MemoryError:
            message = f"schema needs more than {memory_bytes >> 20} MiB to compile"
            conn.send(("error", message, time.process_time() - began))
        except Exception as exc:  # a hostile schema can trip the generator in many ways
            message = f"invalid schema: {type(exc).__name__}: {exc}"
            conn.send(("error", message, time.process_time() - began))


class CompileBudget:
    """Per client (in one gate process): compile CPU seconds and refused schemas within the
    last minute. (A client's compiles also run one after another: ``SchemaCache``.)"""

    WINDOW_S = 60.0

    def __init__(self, seconds: float, failures: int) -> None:
        self._seconds = seconds
        self._failures = failures
        self._spent: dict[int, deque[tuple[float, float, bool]]] = {}

    def check(self, client_id: int, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        spent = self._recent(client_id, now)
        seconds = sum(s for _, s, _ in spent)
        failed = sum(1 for _, _, f in spent if f)
        if self._seconds and seconds >= self._seconds:
            raise _over(
                f"this client's new schemas took {seconds:.1f} CPU seconds to compile in "
                f"the last minute (limit {self._seconds:g} s); schemas already seen keep working"
            )
        if self._failures and failed >= self._failures:
            raise _over(
                f"{failed} of this client's schemas were refused in the last minute "
                f"(limit {self._failures}); fix the schema and retry later"
            )

    def finish(self, client_id: int, seconds: float, failed: bool) -> None:
        self._spent.setdefault(client_id, deque()).append((time.monotonic(), seconds, failed))

    def _recent(self, client_id: int, now: float) -> deque[tuple[float, float, bool]]:
        spent = self._spent.get(client_id)
        if spent is None:
            return deque()
        while spent and now - spent[0][0] > self.WINDOW_S:
            spent.popleft()
        if not spent:
            del self._spent[client_id]
        return spent


def _over(message: str) -> ApiError:
    return ApiError(
        429,
        {"status": "ERROR", "message": message, "limit": "schema_compiles"},
        {"Retry-After": "5"},
    )
