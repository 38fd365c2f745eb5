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
    failures are transient, and whatever is left is permanent (an operator must look). The
    warehouse's SQL state, where its driver tells it, ends the message as ``[SQLSTATE xxxxx]``
    (what ``skein status`` and Connect v4's ``error_state`` show)."""
    if isinstance(exc, LoadError):
        found: LoadError | None = exc
    else:
        found = classify_source(exc) or driver(exc)
    if found is None:
        if isinstance(exc, OSError | TimeoutError):
            found = TransientError(f"I/O failure: {exc}")
        else:
            found = PermanentError(f"{type(exc).__name__}: {exc}")
    code = sql_state(exc)
    if code is None or "[SQLSTATE " in str(found):
        return found
    tagged = type(found)(f"{found} [SQLSTATE {code}]")
    tagged.__cause__ = found.__cause__ or (exc if exc is not found else None)
    return tagged


def sql_state(exc: BaseException | None) -> str | None:
    """The five-character SQL state the driver attached to ``exc`` (or to its cause): psycopg2's
    ``pgcode``, the Snowflake connector's ``sqlstate``, redshift_connector's ``C`` field."""
    seen = 0
    while exc is not None and seen < 5:
        for attr in ("pgcode", "sqlstate"):
            code = getattr(exc, attr, None)
            if isinstance(code, str) and len(code) == 5:
                return code
        first = exc.args[0] if exc.args else None
        if isinstance(first, dict) and isinstance(first.get("C"), str) and len(first["C"]) == 5:
            return str(first["C"])
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None
