"""Two kinds of load failure, decided by one skeleton (``classify``) with a hook per warehouse
(its driver's exceptions)."""

from __future__ import annotations

from collections.abc import Callable


class LoadError(Exception):
    kind = "transient"


class TransientError(LoadError):
    """Worth retrying with back-off: the warehouse is down, slow, refusing credentials for now."""

    kind = "transient"


class PermanentError(LoadError):
    """Retrying cannot help: the batch is parked (dead) with this reason for an operator."""

    kind = "permanent"


def classify_source(exc: BaseException) -> LoadError | None:
    """Failures reading a batch from the object store (shared by every warehouse); None when
    ``exc`` is not one. A missing object is permanent (an operator must look: the batch was
    registered after its upload); anything else from S3 is worth retrying."""
    from botocore.exceptions import BotoCoreError, ClientError

    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in ("NoSuchKey", "404", "NoSuchBucket"):
            return PermanentError(f"batch object missing from the object store: {exc}")
        return TransientError(f"object store error: {exc}")
    if isinstance(exc, BotoCoreError):
        return TransientError(f"object store unavailable: {exc}")
    return None


def classify(exc: BaseException, driver: Callable[[BaseException], LoadError | None]) -> LoadError:
    """Whether a load failure is worth retrying, the same way for every warehouse: a LoadError
    stays what it is; the object store's failures are shared (``classify_source``); then the
    warehouse's hook (``driver``: its driver's exceptions, None for anything else); then I/O
    failures are transient, and whatever is left is permanent (an operator must look)."""
    if isinstance(exc, LoadError):
        return exc
    found = classify_source(exc) or driver(exc)
    if found is not None:
        return found
    if isinstance(exc, OSError | TimeoutError):
        return TransientError(f"I/O failure: {exc}")
    return PermanentError(f"{type(exc).__name__}: {exc}")
