"""Which Redshift failures are worth retrying: redshift-connector's exceptions and SQL states,
the hook this warehouse gives the shared skeleton (``services.loaders.core.errors.classify``)."""

from __future__ import annotations

from redshift_connector import error as rs

from services.loaders.core import errors
from services.loaders.core.errors import LoadError, PermanentError, TransientError

# SQLSTATE classes/codes worth retrying: connection, resources, operator intervention,
# serialization and deadlocks, locks, credentials and privileges.
TRANSIENT_CLASSES = ("08", "53", "57", "40", "28")
TRANSIENT_CODES = {"55P03", "42501"}


def classify(exc: BaseException) -> LoadError:
    """Whether a Redshift failure is worth retrying (``core.errors.classify`` with its hook)."""
    return errors.classify(exc, _driver_error)


def _driver_error(exc: BaseException) -> LoadError | None:
    if isinstance(exc, rs.InterfaceError | rs.OperationalError):
        return TransientError(f"warehouse unavailable: {exc}")
    if isinstance(exc, rs.Error):
        fields = exc.args[0] if exc.args and isinstance(exc.args[0], dict) else {}
        code = str(fields.get("C", ""))
        message = str(fields.get("M", exc))
        if code[:2] in TRANSIENT_CLASSES or code in TRANSIENT_CODES:
            return TransientError(f"warehouse refused for now: {code} {message}")
        if "S3ServiceException" in message:  # the staging bucket or its credentials
            return TransientError(f"Redshift cannot read the staged batch: {message}")
        return PermanentError(f"warehouse rejected the load: {code} {message}")
    return None
