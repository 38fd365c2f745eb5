"""The Redshift warehouse as the lease loop sees it (``services.loaders.core.runner.Warehouse``).

``redshift-connector`` is imported only in this folder (the ``redshift`` extra). Staged files
go to the destination's own S3 bucket (``s3_bucket``, ``s3_prefix``, ``s3_region``; ``iam_role`` or
``aws_access_key_id`` + the secret ``aws_secret_access_key`` for Redshift to read them).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import boto3
from botocore.config import Config

from common.spool_client import Lease
from common.wire import Header
from services.loaders.core.errors import LoadError, PermanentError
from services.loaders.core.plan import LeaseLoad
from services.loaders.core.reader import Record
from services.loaders.core.runner import Destination
from services.loaders.postgres.connection import SessionLimits
from services.loaders.redshift import connection, errors, warehouse
from services.loaders.redshift import statements as S


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
        self.limits = SessionLimits(
            connect_timeout_s=connect_timeout, statement_timeout_s=statement_timeout_s
        )

    def open(self, destination: Destination) -> Any:
        return connection.connect(
            destination.config, destination.secrets, self.limits, dict(destination.pinned)
        )

    def close(self, session: Any) -> None:
        connection.close(session)

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
        return errors.classify(exc)


def probe_warehouse() -> RedshiftWarehouse:
    """The warehouse as ``skein destinations test`` connects to it (default limits)."""
    return RedshiftWarehouse()
