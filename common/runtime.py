"""Process-wide interpreter settings for the services whose hot paths parse JSON."""

from __future__ import annotations

import gc
import sys

# A young collection every 50,000 container allocations instead of 700; older generations in
# proportion.
GC_THRESHOLDS = (50_000, 20, 20)
SWITCH_INTERVAL_S = 0.001


def tune_gc() -> None:
    """Make CPython's cycle collector rare and keep it off the objects that live forever.

    The gate and the loaders turn JSON into thousands of small dicts and lists per request or
    batch. With the default threshold (700) the collector ran every few hundred
    records and, every few collections, scanned the whole heap: parsing a 1,000-record body
    took ~6 ms instead of ~1.3 ms with requests in flight. Those objects never form cycles
    (reference counting frees them), so collecting them is wasted work. ``gc.freeze`` moves
    what exists at start-up (modules, the app, settings) out of every later collection;
    the higher thresholds keep collections rare. Call it once per process, after start-up.
    """
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def quick_gil_handoff() -> None:
    """Hand the GIL over after 1 ms instead of Python's 5 ms.

    A thread coming back from a call that released the GIL (librdkafka's consume, each deflate
    step of ISA-L, socket I/O, a statement on the warehouse) waits until the thread running
    Python drops it: up to one whole switch interval. In the streamery a 1 MB deflate that needs
    ~1.5 ms of CPU took ~28 ms beside the busy consume loop; in the Postgres loader each merge
    statement's return waited on the parser. With 1 ms the waits shrink about as much, for a few
    more (cheap) forced switches.
    """
    sys.setswitchinterval(SWITCH_INTERVAL_S)
