"""The Redshift warehouse as the lease loop sees it (``services.loaders.core.runner.Warehouse``).

``redshift-connector`` is imported only here (the ``redshift`` extra). Staged files go to the
destination's own S3 bucket (``s3_bucket``, ``s3_prefix``, ``s3_region``; ``iam_role`` or
``aws_access_key_id`` + the secret ``aws_secret_access_key`` for Redshift to read them).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import boto3
import redshift_connector
from botocore.config import Config
from redshift_connector import error as rs

from common.spool_client import Lease
from common.wire import Header
from services.loaders.core import errors
from services.loaders.core.errors import (
    LoadError,
    PermanentError,
    TransientError,
)
from services.loaders.core.plan import LeaseLoad
from services.loaders.core.reader import Record
from services.loaders.core.runner import Destination
from services.loaders.redshift import statements as S
from services.loaders.redshift import warehouse

# SQLSTATE classes/codes worth retrying: connection, resources, operator intervention,
# serialization and deadlocks, locks, credentials and privileges.
TRANSIENT_CLASSES = ("08", "53", "57", "40", "28")
TRANSIENT_CODES = {"55P03", "42501"}


def connect(
    config: dict[str, Any],
    secrets: dict[str, str],
    timeout: int,
    statement_timeout_s: float = 300.0,
) -> Any:
    params = dict(config.get("dsn_params", {}))
    kwargs: dict[str, Any] = {
        "host": params.get("host"),
        "port": int(params.get("port", 5439)),
        "database": params.get("dbname", "dev"),
        "user": params.get("user"),
        "password": secrets.get("password"),
        "timeout": timeout,
        "application_name": "skein-loader-redshift",
        "tcp_keepalive": True,
    }
    if params.get("sslmode") == "disable":
        kwargs["ssl"] = False
    conn = redshift_connector.connect(**kwargs)
    # Redshift has no lock_timeout; a statement limit bounds both a slow query and a lock wait.
    conn.autocommit = True
    with contextlib.closing(conn.cursor()) as cur:
        cur.execute(f"SET statement_timeout TO {int(statement_timeout_s * 1000)}")
    conn.autocommit = False
    return conn


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


class S3Copier:
    """Uploads a staged file and its JSONPaths to the destination's bucket, then COPYs it."""

    def __init__(self, config: dict[str, Any], secrets: dict[str, str], run: str) -> None:
        self.bucket = str(config.get("s3_bucket", ""))
        if not self.bucket:
            raise PermanentError("the redshift destination has no s3_bucket setting")
        self.prefix = str(config.get("s3_prefix", "skein-staging")).strip("/")
        self.run = run
        self.auth = S.copy_auth(config, secrets)
        self.s3 = boto3.client(
            "s3",
            endpoint_url=config.get("s3_endpoint") or None,
            region_name=config.get("s3_region") or None,
            aws_access_key_id=config.get("aws_access_key_id") or None,
            aws_secret_access_key=secrets.get("aws_secret_access_key") or None,
            config=Config(retries={"max_attempts": 3, "mode": "standard"}),
        )

    def upload(self, staged: warehouse.StagedFile, key: str) -> tuple[str, str]:
        base = f"{self.prefix}/{self.run}/{key}"
        self.s3.upload_file(staged.path, self.bucket, f"{base}.json.gz")
        paths = S.jsonpaths(len(staged.staged.order))
        self.s3.put_object(Bucket=self.bucket, Key=f"{base}.jsonpaths", Body=paths)
        return base + ".json.gz", base + ".jsonpaths"

    def copy(self, cur: Any, name: str, staged: warehouse.StagedFile, key: str) -> None:
        data, paths = self.upload(staged, key)
        try:
            cur.execute(
                S.copy_json(
                    name,
                    staged.staged.order,
                    f"s3://{self.bucket}/{data}",
                    f"s3://{self.bucket}/{paths}",
                    self.auth,
                )
            )
        finally:
            self.remove(data, paths)

    def remove(self, *keys: str) -> None:
        with contextlib.suppress(Exception):
            self.s3.delete_objects(
                Bucket=self.bucket, Delete={"Objects": [{"Key": k} for k in keys]}
            )


class RedshiftWarehouse:
    type = "redshift"

    def __init__(self, connect_timeout: int = 10, statement_timeout_s: float = 300.0) -> None:
        self.connect_timeout = connect_timeout
        self.statement_timeout_s = statement_timeout_s

    def open(self, destination: Destination) -> Any:
        return connect(
            destination.config, destination.secrets, self.connect_timeout, self.statement_timeout_s
        )

    def close(self, session: Any) -> None:
        with contextlib.suppress(rs.Error):
            session.close()

    def probe(self, session: Any, destination: Destination) -> str:
        """One round trip (``skein destinations test``): the server's version."""
        cur = session.cursor()
        cur.execute("SELECT version()")
        version = str(cur.fetchone()[0])
        session.rollback()
        return version

    def cancel(self, session: Any) -> None:
        # redshift-connector has no cancel request: closing the socket ends the statement.
        self.close(session)

    def already_loaded(self, session: Any, destination: Destination, ids: list[int]) -> set[int]:
        schema = warehouse.schema_of(destination.config, destination.client_id)
        warehouse.ensure_metadata(session, schema)
        return warehouse.loaded_batches(session, schema, ids)

    def load(
        self,
        session: Any,
        destination: Destination,
        lease: Lease,
        batch_ids: list[int],
        stream: Iterator[Header | Record],
    ) -> tuple[int, int]:
        schema = warehouse.schema_of(destination.config, destination.client_id)
        work = LeaseLoad.of(lease, batch_ids, stream)
        copier = S3Copier(
            destination.config, destination.secrets, f"{destination.client_id}/{lease.lease_token}"
        )
        return warehouse.load(session, schema, work, copier)

    def classify(self, exc: BaseException) -> LoadError:
        return classify(exc)


def probe_warehouse() -> RedshiftWarehouse:
    """The warehouse as ``skein destinations test`` connects to it (default limits)."""
    return RedshiftWarehouse()
