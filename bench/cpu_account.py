"""Where the machine's CPU went during a measured window, by process group.

The benchmarks share two cores with everything they measure against (brokers, the S3 server,
the pipeline's other services), so a throughput figure alone cannot say what limits it. This
samples each process's user + system time from /proc at the window's start and end and reports
CPU-seconds per group, per second (cores) and per GB processed: the denominators that show
which process a faster figure would have to come from. Linux only; no dependencies.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PIDS = ROOT / ".run" / "pids"
_TICK = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float:
    """User + system time of ``pid`` and its threads (not its children), 0 when gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _children(pid: int) -> list[int]:
    try:
        found = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []
    out = [int(c) for c in found]
    for child in list(out):
        out.extend(_children(child))
    return out


def stack_pid(name: str) -> int | None:
    """The pid of a local-stack daemon (``deploy/local/stack.sh`` writes ``.run/pids``)."""
    try:
        return int((PIDS / f"{name}.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def with_children(pid: int | None) -> list[int]:
    return [] if pid is None else [pid, *_children(pid)]


def stack_groups() -> dict[str, Callable[[], list[int]]]:
    """The local stack's daemons by role (each resolved when sampled: workers may respawn)."""
    return {
        "gate": lambda: with_children(stack_pid("gate")),
        "kafka brokers": lambda: [p for n in (1, 2, 3) if (p := stack_pid(f"kafka-{n}"))],
        "S3 server": lambda: with_children(stack_pid("s3")),
        "streamery": lambda: with_children(stack_pid("streamery")),
        "spool": lambda: with_children(stack_pid("spool")),
        "loaders": lambda: with_children(stack_pid("loaders.postgres")),
        # each Postgres cluster apart: the spool's state and the warehouse under load
        "pg control": lambda: with_children(postmaster_pid("control")),
        "pg warehouse": lambda: with_children(postmaster_pid("warehouse")),
        # the benchmark itself (its senders and its progress polls), apart from "other"
        "this bench": lambda: [os.getpid()],
    }


def postmaster_pid(cluster: str) -> int | None:
    """The pid of a local-stack Postgres cluster's postmaster (its backends are its children)."""
    try:
        return int((ROOT / ".run" / "pg" / cluster / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def postgres_pids() -> list[int]:
    """Every Postgres process on the machine, whichever cluster."""
    return [p for p in _all_pids() if _cmdline(p).startswith("postgres")]


def _all_pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _machine_busy_seconds() -> float:
    """CPU-seconds all cores spent busy (everything but idle and iowait) since boot."""
    with open("/proc/stat") as f:
        cpu = [int(v) for v in f.readline().split()[1:]]
    return (sum(cpu) - cpu[3] - cpu[4]) / _TICK


@dataclass
class CpuWindow:
    """``start()``, run the workload, ``stop()``; then ``report(gb)``."""

    groups: dict[str, Callable[[], list[int]]]
    _start: dict[str, dict[int, float]] = field(default_factory=dict)
    _end: dict[str, dict[int, float]] = field(default_factory=dict)
    _busy: tuple[float, float] = (0.0, 0.0)
    _wall: tuple[float, float] = (0.0, 0.0)

    def _sample(self) -> dict[str, dict[int, float]]:
        return {
            name: {pid: _cpu_seconds(pid) for pid in pids()} for name, pids in self.groups.items()
        }

    def start(self) -> None:
        self._start = self._sample()
        self._busy = (_machine_busy_seconds(), 0.0)
        self._wall = (time.monotonic(), 0.0)

    def stop(self) -> None:
        self._end = self._sample()
        self._busy = (self._busy[0], _machine_busy_seconds())
        self._wall = (self._wall[0], time.monotonic())

    def seconds(self) -> dict[str, float]:
        used = {}
        for name, end in self._end.items():
            begin = self._start.get(name, {})
            # A process that started inside the window counts from zero.
            used[name] = sum(max(0.0, t - begin.get(pid, 0.0)) for pid, t in end.items())
        return used

    def report(self, gb: float, label: str = "GB") -> str:
        wall = self._wall[1] - self._wall[0]
        used = self.seconds()
        busy = self._busy[1] - self._busy[0]
        rows = [
            f"    {name:<14} {s:6.1f} CPU-s {s / wall:5.2f} cores {s / gb:6.2f} CPU-s/{label}"
            for name, s in sorted(used.items(), key=lambda kv: -kv[1])
            if s > 0.05
        ]
        other = busy - sum(used.values())
        rows.append(
            f"    {'other':<14} {other:6.1f} CPU-s {other / wall:5.2f} cores "
            f"{other / gb:6.2f} CPU-s/{label}"
        )
        head = (
            f"  CPU over {wall:.1f} s: machine busy {busy / wall:.2f} of {os.cpu_count()} cores, "
            f"{busy / gb:.2f} CPU-s per {label}"
        )
        return "\n".join([head, *rows])
