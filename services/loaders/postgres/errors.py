"""Which Postgres failures are worth retrying: psycopg2's exceptions, the hook this warehouse
gives the shared skeleton (``services.loaders.core.errors.classify``)."""

from __future__ import annotations

import psycopg2
import psycopg2.errors

from services.loaders.core import errors
from services.loaders.core.errors import LoadError, PermanentError, TransientError


def classify(exc: BaseException) -> LoadError:
    """Whether a Postgres failure is worth retrying (``core.errors.classify`` with its hook)."""
    return errors.classify(exc, _driver_error)


def _driver_error(exc: BaseException) -> LoadError | None:
    if isinstance(exc, psycopg2.OperationalError | psycopg2.InterfaceError):
        return TransientError(f"warehouse unavailable: {str(exc).strip()}")
    if isinstance(
        exc,
        psycopg2.errors.InsufficientPrivilege
        | psycopg2.errors.InvalidPassword
        | psycopg2.errors.InvalidAuthorizationSpecification
        | psycopg2.errors.DeadlockDetected
        | psycopg2.errors.SerializationFailure
        | psycopg2.errors.LockNotAvailable
        | psycopg2.errors.QueryCanceled
        | psycopg2.errors.AdminShutdown
        | psycopg2.errors.DiskFull
        | psycopg2.errors.OutOfMemory
        | psycopg2.errors.TooManyConnections,
    ):
        return TransientError(f"warehouse refused for now: {str(exc).strip()}")
    if isinstance(exc, psycopg2.Error):
        return PermanentError(f"warehouse rejected the load: {str(exc).strip()}")
    return None
