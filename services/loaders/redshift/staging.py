"""Staging a Redshift load: each staged table's rows written as gzip JSON lines (one array per
row, ``json_lines``), uploaded with its JSONPaths file to the destination's bucket and loaded
with ``COPY ... FORMAT AS JSON`` into a temporary staging table (``S3Copier``).

The COPY is behind ``Copier`` so the merge can run against Postgres in the tests (which read
the same staged object back from S3 instead).
"""

from __future__ import annotations

import contextlib
import gzip
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import boto3
from botocore.config import Config

from services.loaders.core.errors import PermanentError
from services.loaders.core.plan import Staged
from services.loaders.core.types import ColumnType
from services.loaders.redshift import statements as S

_FIELD = re.compile(rb'"(?:[^"\\]|\\.)*"|[^,\n]*')


@dataclass
class StagedFile:
    """One staged table's rows as gzip JSON lines on local disk, and its text lengths."""

    staged: Staged
    path: str
    lengths: dict[str, int] = field(default_factory=dict)


def json_lines(staged: Staged, path: str) -> StagedFile:
    """Write the spill as gzip JSON arrays (an empty field is null); measure text columns."""
    order = staged.order
    text_at = [i for i, c in enumerate(order) if staged.shape.columns.get(c) is ColumnType.TEXT]
    longest = [0] * len(order)
    with gzip.open(path, "wb", compresslevel=1) as out:
        for chunk in staged.spill.text(len(order)):
            for line in chunk.splitlines():
                fields = _split(line)
                for i in text_at:
                    longest[i] = max(longest[i], len(fields[i]) - 2)  # bytes, escapes included
                out.write(b"[" + b",".join(f or b"null" for f in fields) + b"]\n")
    return StagedFile(staged, path, {order[i]: longest[i] for i in text_at})


def _split(line: bytes) -> list[bytes]:
    fields, pos, end = [], 0, len(line)
    while True:
        match = _FIELD.match(line, pos)
        assert match is not None  # the pattern matches the empty string
        fields.append(match.group())
        pos = match.end() + 1  # past the comma
        if pos > end:
            return fields


class Copier(Protocol):
    """Gets a staged file's rows into a staging table."""

    def copy(self, cur: Any, name: str, staged: StagedFile, key: str) -> None: ...


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

    def upload(self, staged: StagedFile, key: str) -> tuple[str, str]:
        base = f"{self.prefix}/{self.run}/{key}"
        self.s3.upload_file(staged.path, self.bucket, f"{base}.json.gz")
        paths = S.jsonpaths(len(staged.staged.order))
        self.s3.put_object(Bucket=self.bucket, Key=f"{base}.jsonpaths", Body=paths)
        return base + ".json.gz", base + ".jsonpaths"

    def copy(self, cur: Any, name: str, staged: StagedFile, key: str) -> None:
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


# (destination config, secrets, run) -> the copier of one load's staged files.
CopierFactory = Callable[[dict[str, Any], dict[str, str], str], Copier]
