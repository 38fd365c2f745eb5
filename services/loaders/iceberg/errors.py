"""Which Iceberg failures are worth retrying: pyiceberg's, SQLAlchemy's (the SQL catalog) and
the object store's, the hook this warehouse gives the shared skeleton
(``services.loaders.core.errors.classify``)."""

from __future__ import annotations

from pyiceberg import exceptions as iexc

from services.loaders.core import errors
from services.loaders.core.errors import LoadError, PermanentError, TransientError
from services.loaders.iceberg.destination import DestinationError

# The catalog's "try again" answers, and the ones a catalog not yet set up or authorised gives
# (an operator fixes it; the spool's retry window keeps the batches meanwhile).
_TRANSIENT = (
    iexc.CommitFailedException,
    iexc.CommitStateUnknownException,
    iexc.ServerError,
    iexc.ServiceUnavailableError,
    iexc.UnauthorizedError,
    iexc.ForbiddenError,
    iexc.AuthorizationExpiredError,
    iexc.OAuthError,
    iexc.TooManyRequestsError,
    iexc.NoSuchNamespaceError,
)


def classify(exc: BaseException) -> LoadError:
    """Whether an Iceberg failure is worth retrying (``core.errors.classify`` with its hook)."""
    return errors.classify(exc, _driver_error)


def _driver_error(exc: BaseException) -> LoadError | None:
    if isinstance(exc, DestinationError):
        return TransientError(f"destination misconfigured: {exc}")
    if isinstance(exc, _TRANSIENT):
        return TransientError(f"Iceberg catalog unavailable or refusing for now: {exc}")
    from sqlalchemy import exc as sqlexc

    if isinstance(exc, sqlexc.OperationalError | sqlexc.InterfaceError | sqlexc.TimeoutError):
        return TransientError(f"SQL catalog unavailable: {str(exc).strip()[:500]}")
    if isinstance(exc, sqlexc.SQLAlchemyError):
        return PermanentError(f"SQL catalog rejected the load: {str(exc).strip()[:500]}")
    if isinstance(exc, iexc.ValidationError | iexc.ResolveError):
        return PermanentError(f"Iceberg refused the table change: {exc}")
    from requests import exceptions as http_exceptions

    if isinstance(exc, http_exceptions.RequestException):
        return TransientError(f"REST catalog unreachable: {exc}")
    return None
