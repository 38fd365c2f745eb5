"""The BigQuery warehouse as the lease loop sees it (``services.loaders.core.runner.Warehouse``)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from google.api_core import exceptions as gexc

from common.spool_client import Lease
from common.wire import Header
from services.loaders.bigquery import warehouse
from services.loaders.bigquery.config import DestinationError, target_of
from services.loaders.core import errors
from services.loaders.core.errors import (
    LoadError,
    PermanentError,
    TransientError,
)
from services.loaders.core.reader import Record
from services.loaders.core.runner import Destination

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


class BigQueryWarehouse:
    type = "bigquery"

    def __init__(self, request_timeout: float = 30.0, job_timeout: float = 600.0) -> None:
        self.request_timeout = request_timeout
        self.job_timeout = job_timeout

    def open(self, destination: Destination) -> Any:
        target = target_of(destination.config, destination.secrets, destination.client_id)
        return warehouse.connect(target, self.request_timeout, self.job_timeout)

    def close(self, session: Any) -> None:
        with contextlib.suppress(Exception):
            session.client.close()

    def probe(self, session: Any, destination: Destination) -> str:
        """One round trip (``skein destinations test``): a query job in the project."""
        rows = list(session.client.query("SELECT 1 AS ok").result(timeout=self.job_timeout))
        return f"project {session.client.project}: query ok ({len(rows)} row)"

    def cancel(self, session: Any) -> None:
        """Nothing to interrupt: every API call and job wait has its own timeout."""

    def already_loaded(self, session: Any, destination: Destination, ids: list[int]) -> set[int]:
        warehouse.ensure_metadata(session)
        return warehouse.loaded_batches(session, ids)

    def load(
        self,
        session: Any,
        destination: Destination,
        lease: Lease,
        batch_ids: list[int],
        stream: Iterator[Header | Record],
    ) -> tuple[int, int]:
        work = warehouse.LeaseWork(
            destination.client_id,
            lease.table_name,
            batch_ids,
            lease.record_counts(batch_ids),
            lease.lease_token,
        )
        return warehouse.load_events(session, work, stream)

    def classify(self, exc: BaseException) -> LoadError:
        return classify(exc)


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


def probe_warehouse() -> BigQueryWarehouse:
    """The warehouse as ``skein destinations test`` connects to it (default limits)."""
    return BigQueryWarehouse()
