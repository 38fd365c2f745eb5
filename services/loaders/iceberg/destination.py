"""An Iceberg destination: its typed settings, checked when it is set, and how a loader reads
them (``target_of``; pure, no driver import here).

``skein destinations set CLIENT iceberg --dsn 'host=H dbname=lakehouse user=U' --password-env
VAR --set warehouse=s3://BUCKET/PREFIX --set aws_access_key_id=K --secret-env
aws_secret_access_key=VAR [--schema NAMESPACE] [--set s3_endpoint=URL --set s3_region=R]``
(a SQL catalog in that Postgres database), or ``--set catalog_uri=https://...`` instead of
``--dsn`` for a REST catalog (``--secret-env catalog_token=VAR`` or ``catalog_credential=VAR``).

The data files are written with the destination's own S3 key pair, never the platform's: a
destination without one is refused. A client-set ``s3_endpoint`` also needs an operator's
grant (``skein clients allow CLIENT --s3-endpoint URL``), as every S3 endpoint a client names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from pydantic import Field

from services.loaders.core.destination import DsnParams, Model, validated

_NAMESPACE = re.compile(r"[A-Za-z0-9_]{1,255}")
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_REGION = re.compile(r"[a-z0-9-]{1,64}")
CATALOG_NAME = "skein"


class DestinationError(ValueError):
    """The destination's settings cannot work; the message says which one and why."""


@dataclass(frozen=True)
class SqlCatalog:
    """A SQL catalog in a Postgres database (libpq parameters, password a secret)."""

    params: dict[str, Any]
    password: str | None


@dataclass(frozen=True)
class RestCatalog:
    uri: str
    token: str | None = None
    credential: str | None = None  # OAuth2 client credentials, "id:secret"


@dataclass(frozen=True)
class IcebergTarget:
    catalog: SqlCatalog | RestCatalog
    catalog_name: str
    warehouse: str  # s3://bucket/prefix
    namespace: str
    access_key_id: str
    secret_access_key: str
    s3_endpoint: str | None = None
    s3_region: str = "us-east-1"


def target_of(config: dict[str, Any], secrets: dict[str, str], client_id: int) -> IcebergTarget:
    """Validate and read a destination; raises :class:`DestinationError`."""
    dsn = config.get("dsn_params")
    uri = config.get("catalog_uri")
    if bool(dsn) == bool(uri):
        raise DestinationError(
            "an iceberg destination needs one catalog: a SQL catalog's Postgres database "
            "(--dsn) or a REST catalog (--set catalog_uri=https://...)"
        )
    catalog: SqlCatalog | RestCatalog
    if dsn:
        if not isinstance(dsn, dict) or not dsn.get("host"):
            raise DestinationError("the SQL catalog's --dsn needs a host")
        catalog = SqlCatalog(dict(dsn), secrets.get("password"))
    else:
        if not _is_url(str(uri)):
            raise DestinationError(f"catalog_uri {uri!r} is not an http(s) URL")
        catalog = RestCatalog(
            str(uri).rstrip("/"), secrets.get("catalog_token"), secrets.get("catalog_credential")
        )
    warehouse = str(config.get("warehouse") or "")
    parts = urlsplit(warehouse)
    if parts.scheme != "s3" or not _BUCKET.fullmatch(parts.netloc or ""):
        raise DestinationError(
            f"warehouse {warehouse!r} must be s3://BUCKET[/PREFIX] (the tables' data files)"
        )
    if config.get("namespace") and config.get("schema") and config["namespace"] != config["schema"]:
        raise DestinationError("give the namespace once (--schema or --set namespace=)")
    namespace = str(config.get("namespace") or config.get("schema") or f"skein_{client_id}")
    if not _NAMESPACE.fullmatch(namespace):
        raise DestinationError(
            f"namespace {namespace!r}: letters, digits and '_' (1-255 characters)"
        )
    key_id = str(config.get("aws_access_key_id") or "")
    secret = secrets.get("aws_secret_access_key") or ""
    if not key_id or not secret:
        raise DestinationError(
            "an iceberg destination writes its data files with its own S3 key pair: --set "
            "aws_access_key_id=... with --secret-env aws_secret_access_key=VAR"
        )
    endpoint = config.get("s3_endpoint")
    if endpoint is not None and not _is_url(str(endpoint)):
        raise DestinationError(f"s3_endpoint {endpoint!r} is not an http(s) URL")
    region = str(config.get("s3_region") or "us-east-1")
    if not _REGION.fullmatch(region):
        raise DestinationError(f"s3_region {region!r} is not a region name")
    name = str(config.get("catalog_name") or CATALOG_NAME)
    if not _NAMESPACE.fullmatch(name):
        raise DestinationError(f"catalog_name {name!r}: letters, digits and '_'")
    return IcebergTarget(
        catalog,
        name,
        warehouse.rstrip("/"),
        namespace,
        key_id,
        secret,
        str(endpoint).rstrip("/") if endpoint is not None else None,
        region,
    )


def _is_url(text: str) -> bool:
    parts = urlsplit(text)
    return parts.scheme in ("http", "https") and bool(parts.hostname)


class Settings(Model):
    """One catalog (``dsn_params`` from ``--dsn``, or ``catalog_uri``); ``namespace`` and
    ``schema`` name the same thing."""

    dsn_params: DsnParams | None = None
    catalog_uri: str | None = None
    catalog_name: str | None = None
    warehouse: str | None = None  # required; target_of explains the rule when it is missing
    namespace: str | None = None
    schema_: str | None = Field(None, alias="schema", min_length=1)
    s3_endpoint: str | None = None  # only where an operator allowed it (the platform's grants)
    s3_region: str | None = None
    aws_access_key_id: str | None = None


class Secrets(Model):
    password: str | None = None  # the SQL catalog's Postgres password
    catalog_token: str | None = None  # a REST catalog's bearer token
    catalog_credential: str | None = None  # ... or its OAuth2 client credentials
    aws_secret_access_key: str | None = None


def check(config: dict[str, Any], secrets: dict[str, str]) -> None:
    """Raise ValueError (``DestinationError``) naming the setting that cannot work."""
    validated(Settings, config, "iceberg setting")
    validated(Secrets, secrets, "iceberg secret")
    target_of(config, secrets, 0)
