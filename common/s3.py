"""The S3 client every Skein process builds from the shared settings (endpoint, bucket, keys)."""

from __future__ import annotations

from typing import Any

import boto3
from botocore.config import Config

from common.settings import SharedSettings


def client(settings: SharedSettings, config: Config | None = None) -> Any:
    """A boto3 S3 client for ``settings``' endpoint and credentials; ``config`` for retries,
    timeouts, checksums and pool size, which differ by caller."""
    return boto3.client(
        "s3",
        endpoint_url=settings.s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id=settings.s3_access_key,
        aws_secret_access_key=settings.s3_secret_key.get_secret_value(),
        config=config,
    )
