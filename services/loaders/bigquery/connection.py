"""Sessions to a client's BigQuery project: its credentials (a service account key, or none for
an emulator endpoint, or else Application Default Credentials where an operator allowed the
project), and the request and job timeouts every session has.

The Google client resolves ``bigquery.googleapis.com`` (or ``api_endpoint``) itself, over
HTTPS with the name checked: a host the name was pointed at cannot pass the handshake. An
``http://`` endpoint (an emulator) has no such guard, so the network policy allows it only to
networks an operator listed (``SKEIN_DESTINATION_ALLOWED_NETWORKS``).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

from google.api_core.client_options import ClientOptions
from google.api_core.retry import Retry
from google.cloud import bigquery

from services.loaders.bigquery import statements
from services.loaders.bigquery.destination import BigQueryTarget

SCOPES = ["https://www.googleapis.com/auth/bigquery"]


@dataclass
class Session:
    client: bigquery.Client
    target: BigQueryTarget
    timeout: float  # per API call
    job_timeout: float  # waiting for one job
    ready: bool = False  # dataset and bookkeeping tables known to exist
    retry: Retry = field(default_factory=lambda: bigquery.DEFAULT_RETRY)

    @property
    def dataset(self) -> statements.Dataset:
        return statements.Dataset(self.target.project, self.target.dataset)

    def ref(self, table: str) -> str:
        return f"{self.target.project}.{self.target.dataset}.{table}"


def connect(target: BigQueryTarget, timeout: float, job_timeout: float) -> Session:
    """A client for the destination: its credentials JSON, or none for an emulator endpoint,
    or else Application Default Credentials."""
    from google.auth.credentials import AnonymousCredentials, Credentials
    from google.oauth2 import service_account

    credentials: Credentials | None = None
    if target.credentials is not None:
        # a service account's key only (config.target_of refuses other types, which would read
        # files or call URLs the client names)
        credentials = service_account.Credentials.from_service_account_info(  # type: ignore[no-untyped-call]
            target.credentials, scopes=SCOPES
        )
    elif target.api_endpoint is not None:
        credentials = AnonymousCredentials()  # type: ignore[no-untyped-call]
    options = ClientOptions(api_endpoint=target.api_endpoint) if target.api_endpoint else None
    client = bigquery.Client(
        project=target.project,
        credentials=credentials,
        location=target.location,
        client_options=options,
    )
    # Retries inside one attempt stay short: the spool's back-off retries a failed load.
    retry = bigquery.DEFAULT_RETRY.with_timeout(timeout * 3)
    return Session(client, target, timeout, job_timeout, retry=retry)


def close(session: Session) -> None:
    with contextlib.suppress(Exception):
        session.client.close()  # type: ignore[no-untyped-call]
