"""A Redshift destination's typed settings, checked when it is set (no driver import here)."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from services.loaders.core.destination import DsnParams, Model, NonEmpty, validated


class Settings(Model):
    dsn_params: DsnParams
    schema_: str | None = Field(None, alias="schema", min_length=1)
    s3_bucket: NonEmpty  # where batches are staged for COPY
    s3_prefix: str = "skein-staging"
    s3_region: str | None = None
    s3_endpoint: str | None = None  # only where an operator allowed it (the platform's grants)
    iam_role: str | None = None  # only a role an operator allowed for the client
    aws_access_key_id: str | None = None


class Secrets(Model):
    password: str | None = None
    aws_secret_access_key: str | None = None


def check(config: dict[str, Any], secrets: dict[str, str]) -> None:
    """Raise ValueError naming what is missing: the cluster, the staging bucket, and a way for
    Redshift to read it (an IAM role, or an access key pair)."""
    if not isinstance(config.get("dsn_params"), dict) or not config["dsn_params"].get("host"):
        raise ValueError("a redshift destination needs a host in --dsn")
    if not config.get("s3_bucket"):
        raise ValueError("a redshift destination needs --set s3_bucket=... to stage batches in")
    settings = validated(Settings, config, "setting")
    sealed = validated(Secrets, secrets, "secret")
    if not settings.iam_role and not (settings.aws_access_key_id and sealed.aws_secret_access_key):
        raise ValueError(
            "a redshift destination needs --set iam_role=ARN, or --set aws_access_key_id=... "
            "with --secret-env aws_secret_access_key=VAR, for COPY to read the staged batches"
        )
