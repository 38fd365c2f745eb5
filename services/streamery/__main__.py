"""``python -m services.streamery``: consume the records topic into batches until SIGTERM."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import signal
import sys
import threading
from types import FrameType

import httpx

from common import logs, runtime
from common.health import serve
from common.spool_client import SpoolClient
from services.streamery.consumer import Streamery
from services.streamery.settings import StreamerySettings
from services.streamery.store import S3Store

log = logging.getLogger("skein.streamery")
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8
_MMAP_THRESHOLD = 2 * 1024 * 1024


def tame_malloc() -> None:
    """Keep resident memory near the budget without faulting in every page of every message.

    glibc raises its mmap threshold each time a large block is freed, so the threshold drifts
    with whatever was freed last; and every thread may get an arena of its own. A fixed
    threshold stops the drift and two arenas are plenty for a handful of threads.

    The threshold is 2 MiB, above the gate's ~1 MiB messages: a message (librdkafka's
    decompressed copy, then Python's) reuses freed heap memory. At 128 KiB every such block was
    a fresh mmap whose pages the kernel faults in and zeroes one by one, then unmaps: page
    faults and munmap were ~40 % of the streamery's CPU while draining (perf), and the drain
    ran ~25 % faster without them, for ~50-90 MiB more peak RSS at the 512 MiB limit. Blocks
    above 2 MiB (fetch responses, batch objects) still go back to the OS when freed, and the
    trim threshold returns a heap's free top beyond 1 MiB.
    """
    name = ctypes.util.find_library("c")
    if not name:
        return
    try:
        libc = ctypes.CDLL(name)
        libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)
        libc.mallopt(_M_TRIM_THRESHOLD, 1024 * 1024)
        libc.mallopt(_M_ARENA_MAX, 2)
    except (OSError, AttributeError):
        pass  # not glibc: its allocator's defaults apply


def spool_reachable(url: str) -> bool:
    try:
        return httpx.get(f"{url.rstrip('/')}/healthz", timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


def main() -> int:
    settings = StreamerySettings()
    logs.configure(settings.log_level)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per spool call is noise
    tame_malloc()
    runtime.quick_gil_handoff()
    store = S3Store(settings)
    spool = SpoolClient(
        settings.spool_url, settings.spool_token.get_secret_value(), settings.spool_timeout_s
    )
    streamery = Streamery(settings, store, spool)
    server = serve(
        settings.metrics_host,
        settings.metrics_port,
        {
            "kafka": streamery.kafka_reachable,
            "s3": store.reachable,
            "spool": lambda: spool_reachable(settings.spool_url),
        },
    )
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("signal received", extra={"signal": signal.Signals(signum).name})
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    code = streamery.run(stop)
    server.shutdown()
    spool.close()
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stdout.flush()
    # An upload thread may still sit in a PUT to an unreachable S3; its batch was abandoned
    # and its offsets not committed, so there is nothing left to wait for.
    os._exit(code)


if __name__ == "__main__":
    main()
