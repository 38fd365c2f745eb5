"""Fault injection for the crash tests: die (SIGKILL, no cleanup) at a named point, once.

Off unless ``SKEIN_LOADER_<TYPE>_FAULT`` names a point; the marker file makes it fire once
even across restarts of the process. Points: ``before_commit`` (rows COPY'd and merged, the
transaction not yet committed) and ``after_commit`` (committed, not yet acknowledged).
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

_point = ""
_marker: Path | None = None


def configure(point: str, marker: str) -> None:
    global _point, _marker
    _point = point
    _marker = Path(marker) if marker else None


def hit(point: str) -> None:
    if not _point or point != _point:
        return
    if _marker is not None:
        if _marker.exists():
            return
        _marker.write_text(point)
    os.kill(os.getpid(), signal.SIGKILL)
