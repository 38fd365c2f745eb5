"""What a Redshift destination must carry, checked when it is set (no driver import here)."""

from __future__ import annotations

from typing import Any


def check(config: dict[str, Any], secrets: dict[str, str]) -> None:
    """Raise ValueError naming what is missing: the cluster, the staging bucket, and a way for
    Redshift to read it (an IAM role, or an access key pair)."""
    dsn = config.get("dsn_params") or {}
    if not dsn.get("host"):
        raise ValueError("a redshift destination needs a host in --dsn")
    if not config.get("s3_bucket"):
        raise ValueError("a redshift destination needs --set s3_bucket=... to stage batches in")
    has_keys = bool(config.get("aws_access_key_id")) and "aws_secret_access_key" in secrets
    if not config.get("iam_role") and not has_keys:
        raise ValueError(
            "a redshift destination needs --set iam_role=ARN, or --set aws_access_key_id=... "
            "with --secret-env aws_secret_access_key=VAR, for COPY to read the staged batches"
        )
