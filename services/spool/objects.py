"""The batch objects in S3, as the spool's retention sees them: deleting what has been loaded."""

from __future__ import annotations

from typing import Any

from botocore.config import Config

from common.s3 import client as s3_client
from common.settings import SharedSettings

_PER_REQUEST = 1000  # S3's DeleteObjects limit


class BatchObjects:
    def __init__(self, settings: SharedSettings) -> None:
        self.bucket = settings.s3_bucket
        self._s3: Any = s3_client(
            settings, Config(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=3)
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
