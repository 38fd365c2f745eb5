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
