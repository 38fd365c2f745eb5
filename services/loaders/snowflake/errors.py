"""Which Snowflake failures are worth retrying: the connector's exceptions and error numbers,
the hook this warehouse gives the shared skeleton (``services.loaders.core.errors.classify``)."""

from __future__ import annotations

from snowflake.connector import errors as sf

from services.loaders.core import errors
from services.loaders.core.errors import LoadError, PermanentError, TransientError

# Errors worth retrying although Snowflake reports them as programming errors: bad or expired
# credentials, missing privileges, a warehouse that is suspended or a statement cancelled.
TRANSIENT_ERRNOS = {390100, 390101, 390102, 390144, 390318, 250001, 604, 606, 630, 3001, 3003}


def classify(exc: BaseException) -> LoadError:
    """Whether a Snowflake failure is worth retrying (``core.errors.classify`` with its hook)."""
    return errors.classify(exc, _driver_error)


def _driver_error(exc: BaseException) -> LoadError | None:
    if isinstance(
        exc,
        sf.OperationalError
        | sf.InterfaceError
        | sf.HttpError
        | sf.InternalServerError
        | sf.ServiceUnavailableError
        | sf.GatewayTimeoutError
        | sf.BadGatewayError
        | sf.RequestTimeoutError
        | sf.TooManyRequests
        | sf.OtherHTTPRetryableError
        | sf.ForbiddenError
        | sf.TokenExpiredError
        | sf.RequestExceedMaxRetryError,
    ):
        return TransientError(f"warehouse unavailable: {exc}")
    if isinstance(exc, sf.Error):
        if exc.errno in TRANSIENT_ERRNOS:
            return TransientError(f"warehouse refused for now: {exc}")
        return PermanentError(f"warehouse rejected the load: {exc}")
    return None
