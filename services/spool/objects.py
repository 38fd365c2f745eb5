"""The batch objects in S3, as the spool's retention sees them: deleting what has been loaded."""

from __future__ import annotations

from typing import Any

import boto3
from botocore.config import Config

from common.settings import SharedSettings

_PER_REQUEST = 1000  # S3's DeleteObjects limit


class BatchObjects:
    def __init__(self, settings: SharedSettings) -> None:
        self.bucket = settings.s3_bucket
        self._s3: Any = boto3.client(
            "s3",
            endpoint_url=settings.s3_endpoint,
            region_name="us-east-1",
            aws_access_key_id=settings.s3_access_key,
            aws_secret_access_key=settings.s3_secret_key.get_secret_value(),
            config=Config(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=3),
        )

    def delete(self, keys: list[str]) -> set[str]:
        """Delete these objects; the keys S3 confirmed gone (a missing key counts as gone)."""
        removed: set[str] = set()
        for start in range(0, len(keys), _PER_REQUEST):
            chunk = keys[start : start + _PER_REQUEST]
            answer = self._s3.delete_objects(
                Bucket=self.bucket,
                Delete={"Objects": [{"Key": k} for k in chunk], "Quiet": True},
            )
            failed = {e["Key"] for e in answer.get("Errors", [])}
            removed.update(k for k in chunk if k not in failed)
        return removed
