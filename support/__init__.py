"""Helpers for driving the local stack from tests and benchmarks: its processes and secrets,
clients with tokens and destinations, records through the gate, rows read back from the
warehouses, stand-in servers and fault injection.

It imports ``common`` and ``services``; they never import it, and it is not part of the
installed package. Tests and benchmarks import from here, never from each other: pytest finds
it from the repository root, a benchmark puts the root on ``sys.path`` first.
"""
