"""Which BigQuery failures are worth retrying: the Google client's exceptions, the hook this
warehouse gives the shared skeleton (``services.loaders.core.errors.classify``)."""

from __future__ import annotations

from google.api_core import exceptions as gexc

from services.loaders.bigquery.destination import DestinationError
from services.loaders.core import errors
from services.loaders.core.errors import LoadError, PermanentError, TransientError

# Job and API errors worth retrying: BigQuery's own "try again" answers, and the ones a
# misconfigured or not-yet-authorised destination gives (an operator fixes it; the spool's
# retry window keeps the batches meanwhile, and only this client waits).
_TRANSIENT = (
    gexc.TooManyRequests,
    gexc.InternalServerError,
    gexc.BadGateway,
    gexc.ServiceUnavailable,
    gexc.GatewayTimeout,
    gexc.DeadlineExceeded,
    gexc.Unauthorized,
    gexc.Forbidden,
    gexc.NotFound,
    gexc.Conflict,
    gexc.RetryError,
)


def classify(exc: BaseException) -> LoadError:
    """Whether a BigQuery failure is worth retrying (``core.errors.classify`` with its hook)."""
    return errors.classify(exc, _driver_error)


def _driver_error(exc: BaseException) -> LoadError | None:
    if isinstance(exc, DestinationError):
        return TransientError(f"destination misconfigured: {exc}")
    if isinstance(exc, _TRANSIENT):
        return TransientError(f"BigQuery unavailable or refusing for now: {exc}")
    if isinstance(exc, gexc.BadRequest) and "concurrent update" in str(exc):
        return TransientError(f"BigQuery transaction conflict: {exc}")
    if isinstance(exc, gexc.GoogleAPICallError):
        return PermanentError(f"BigQuery rejected the load: {exc}")
    from google.auth import exceptions as auth_exceptions
    from requests import exceptions as http_exceptions

    if isinstance(exc, auth_exceptions.GoogleAuthError):
        return TransientError(f"BigQuery credentials: {exc}")
    if isinstance(exc, http_exceptions.RequestException | OSError | TimeoutError):
        return TransientError(f"BigQuery unreachable: {exc}")
    return None
