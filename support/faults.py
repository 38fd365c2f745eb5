"""Faults for the chaos suite: SIGKILL-and-restart of each process and timed outages of the S3
server and the demo warehouse, driven by ``deploy/local/stack.sh``, at seeded random moments.

Two lanes run side by side: one kills and restarts processes (a broker, the streamery, the spool,
the Postgres loader, one gate worker, the whole gate), the other takes S3 or the warehouse away
for 30 s. Each lane goes through its faults in a shuffled order, again and again until the run's
duration is over, and always brings back what it took down. ``restore_all`` in the test's
``finally`` brings back anything still down if a lane failed half-way.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from common import kafka_admin
from common.settings import SharedSettings
from support.stack import PIDS, healthy, service_pid, stack, wait_for

OUTAGE_S = 30.0
SERVICE_PORTS = {"gate": 8080, "spool": 8081, "streamery": 9102, "loaders.postgres": 9103}


def sigkill_service(name: str) -> None:
    """SIGKILL a service and every process it started (uvicorn workers share its group), then
    drop its pid file: a killed process may stay a zombie until init reaps it, and stack.sh
    would take a zombie for a running service."""
    pid = service_pid(name)
    with contextlib.suppress(ProcessLookupError):  # dead already (someone else's doing)
        os.killpg(pid, signal.SIGKILL)
    wait_for(lambda: not live_members(pid), timeout=30, what=f"{name} to die")
    (PIDS / f"{name}.pid").unlink(missing_ok=True)


def live_members(pgid: int) -> list[int]:
    """The processes of a process group that are not dead yet (zombies count as dead)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def answering(port: int) -> bool:
    return healthy(f"http://127.0.0.1:{port}/healthz")


def gate_workers() -> list[int]:
    """The uvicorn worker processes of the gate (its supervisor's children, minus the
    multiprocessing resource tracker)."""
    parent = service_pid("gate")
    workers = []
    for task in Path(f"/proc/{parent}/task").iterdir():
        for child in (task / "children").read_text().split():
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
            if b"spawn_main" in cmdline and not zombie(int(child)):
                workers.append(int(child))
    return workers


@dataclass
class Fault:
    """One fault: ``inject`` takes a component away, ``restore`` brings it back and waits until
    it is usable again."""

    name: str
    choose: Callable[[random.Random], str]  # which component (a broker is picked at random)
    inject: Callable[[str, random.Random], str]  # returns what exactly was hit, for the log
    restore: Callable[[str], None]
    hold: Callable[[random.Random], float]  # seconds to stay down


def kafka_ready(timeout: float = 180) -> None:
    settings = SharedSettings()
    kafka_admin.wait_ready(kafka_admin.admin(settings), settings.topic, 3, 3, timeout)


def _kill_broker(what: str, rng: random.Random) -> str:
    kafka_ready()  # never two brokers down: the previous one is back in every ISR
    stack("kafka-kill", what.removeprefix("kafka-"))
    return what


def _start_broker(what: str) -> None:
    stack("kafka-start", what.removeprefix("kafka-"))
    kafka_ready()


def _kill_service(what: str, rng: random.Random) -> str:
    sigkill_service(what)
    return what


def _start_service(what: str) -> None:
    # On the shared development stack someone else may start the same service at the same
    # moment (one of the two then exits): a healthy service is all that counts.
    for attempt in range(3):
        try:
            stack("start", what)
        except AssertionError:
            if attempt == 2:
                raise
            continue
        pidfile = PIDS / f"{what}.pid"
        if pidfile.exists() and live_members(service_pid(what)) and answering(SERVICE_PORTS[what]):
            return
    raise AssertionError(f"{what} did not start again")


_gate_worker_count: list[int] = []


def _kill_gate_worker(what: str, rng: random.Random) -> str:
    workers = wait_for(gate_workers, timeout=60, what="gate workers")
    _gate_worker_count[:] = [len(workers)]
    victim = rng.choice(sorted(workers))
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: victim not in gate_workers(), timeout=30, what=f"gate worker {victim} to die")
    return f"gate worker pid {victim} (of {len(workers)})"


def _gate_worker_back(what: str) -> None:
    # uvicorn's supervisor notices the dead worker within a second and starts another.
    count = _gate_worker_count[0] if _gate_worker_count else 1
    wait_for(lambda: len(gate_workers()) >= count, timeout=60, what="a new gate worker")
    wait_for(lambda: answering(8080), timeout=60, what="the gate")


def _stop(what: str, rng: random.Random) -> str:
    if "s3" in what:
        stack("s3-stop")
    if "warehouse" in what:
        stack("pg-stop", "warehouse")
    return what


def _start_stopped(what: str) -> None:
    if "s3" in what:
        stack("s3-start")
    if "warehouse" in what:
        stack("pg-start", "warehouse")


def kill_faults() -> list[Fault]:
    def brief(rng: random.Random) -> float:
        return rng.uniform(0.5, 5.0)

    def broker(rng: random.Random) -> str:
        return f"kafka-{rng.randint(1, 3)}"

    faults = [
        Fault("kafka broker", broker, _kill_broker, _start_broker, brief),
        Fault(
            "gate worker",
            fixed("gate worker"),
            _kill_gate_worker,
            _gate_worker_back,
            lambda rng: 0.0,
        ),
    ]
    faults += [
        Fault(name, fixed(name), _kill_service, _start_service, brief)
        for name in ("gate", "streamery", "spool", "loaders.postgres")
    ]
    return faults


def fixed(what: str) -> Callable[[random.Random], str]:
    return lambda rng: what


def outage_faults() -> list[Fault]:
    """S3 alone, the warehouse alone, and both at once (the short run's only outage: both
    stores away for 30 s together, so that its batches' back-off grows over one outage only)."""
    return [
        Fault(what, fixed(what), _stop, _start_stopped, lambda rng: OUTAGE_S)
        for what in ("s3+warehouse", "s3", "warehouse")
    ]


@dataclass
class ChaosLane:
    """Runs ``first`` (shuffled), whatever the time, then shuffled rounds of ``faults``, at
    random gaps, until ``until`` (monotonic)."""

    name: str
    first: list[Fault]
    faults: list[Fault]
    rng: random.Random
    until: float
    log: Callable[[str], None]
    gap_s: tuple[float, float]  # between faults of the first round
    later_gap_s: tuple[float, float]  # between faults of later rounds
    down: dict[str, Fault] = field(default_factory=dict)
    injected: list[str] = field(default_factory=list)
    error: BaseException | None = None
    abort: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self) -> None:
        try:
            order, first = list(self.first), True  # even a short run hits each of these
            while True:
                self.rng.shuffle(order)
                for fault in order:
                    self.abort.wait(self.rng.uniform(*(self.gap_s if first else self.later_gap_s)))
                    if self.abort.is_set() or (not first and time.monotonic() >= self.until):
                        return
                    self._apply(fault)
                if time.monotonic() >= self.until:
                    return
                order, first = list(self.faults), False
        except BaseException as exc:  # reported by the test, which restores what is down
            self.error = exc
            self.log(f"{self.name}: failed: {exc!r}")

    def _apply(self, fault: Fault) -> None:
        hold = fault.hold(self.rng)
        what = fault.choose(self.rng)
        with self.lock:
            self.down[what] = fault  # before the kill: restore_all must see a half-done fault
            hit = fault.inject(what, self.rng)
        self.injected.append(fault.name)
        self.log(f"{self.name}: {fault.name}: took down {hit}, back in {hold:.1f}s")
        self.abort.wait(hold)
        started = time.monotonic()
        with self.lock:  # never two starts of one component at once (stack.sh has no lock)
            if what in self.down:
                fault.restore(what)
                del self.down[what]
        self.log(f"{self.name}: {what} restored in {time.monotonic() - started:.1f}s")

    def restore_all(self) -> None:
        with self.lock:
            for what, fault in list(self.down.items()):
                self.log(f"{self.name}: restoring {what} after a failure")
                fault.restore(what)
                del self.down[what]
