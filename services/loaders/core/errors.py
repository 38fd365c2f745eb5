"""Two kinds of load failure, decided in one place per warehouse (its ``classify``)."""

from __future__ import annotations


class LoadError(Exception):
    kind = "transient"


class TransientError(LoadError):
    """Worth retrying with back-off: the warehouse is down, slow, refusing credentials for now."""

    kind = "transient"


class PermanentError(LoadError):
    """Retrying cannot help: the batch is parked (dead) with this reason for an operator."""

    kind = "permanent"
