"""The S3 clients every Skein process builds from the shared settings (endpoint, bucket, keys):
boto3's for everything (``client``), and a lean one for the batch objects' hot path
(``Objects``)."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import boto3
import urllib3
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError, EndpointConnectionError

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


class Objects:
    """Whole-object PUT and streamed GET of batch objects: the hot path of the streamery (one
    PUT per batch) and the loaders (one GET per batch), without boto3's per-call machinery.

    boto3 spends ~1.1 ms of CPU on a 120 KB PUT or GET against the local S3 (event hooks,
    parameter validation, endpoint rules, user-agent, response parsing) where the request
    itself costs ~0.5 ms; with many small tables that is a batch's cost twice over. Here a
    request is signed by botocore's own SigV4 signer (``S3SigV4Auth``, the one boto3 uses) and
    sent on a urllib3 pool, path-style as boto3 sends to the same endpoint. Failures look as
    boto3's do, so callers classify them unchanged: an S3 error answer raises ``ClientError``
    with S3's error code (``NoSuchKey``...), a transport failure ``EndpointConnectionError``.
    Everything else (buckets, listings, deletes, presigning) stays with ``client``. An HTTPS
    endpoint's private CA is read from ``AWS_CA_BUNDLE`` as boto3 reads it; proxies
    (``HTTPS_PROXY``) are not used: batch objects go straight to the endpoint.
    """

    def __init__(
        self,
        settings: SharedSettings,
        *,
        timeout_s: float,
        connect_timeout_s: float = 3.0,
        pool_size: int = 10,
        retries: int = 0,
    ) -> None:
        self.bucket = settings.s3_bucket
        self._base = f"{settings.s3_endpoint.rstrip('/')}/{quote(self.bucket, safe='')}/"
        credentials = Credentials(settings.s3_access_key, settings.s3_secret_key.get_secret_value())
        self._signer = S3SigV4Auth(credentials, "s3", "us-east-1")
        # Retried: connection failures and S3's 500/502/503/504 before any body byte is read.
        retry = urllib3.Retry(
            total=retries,
            backoff_factor=0.1,
            status_forcelist=(500, 502, 503, 504),
            allowed_methods=None,
            raise_on_status=False,
        )
        self._pool = urllib3.PoolManager(
            # An HTTPS endpoint signed by a private CA: the bundle boto3 would read.
            ca_certs=os.environ.get("AWS_CA_BUNDLE") or None,
            num_pools=2,
            maxsize=pool_size,
            block=False,
            retries=retry,
            timeout=urllib3.Timeout(connect=connect_timeout_s, read=timeout_s),
        )

    def url(self, key: str) -> str:
        return self._base + quote(key, safe="/~")

    def _signed(self, method: str, key: str, body: bytes | None, headers: dict[str, str]) -> Any:
        request = AWSRequest(method, self.url(key), data=body, headers=headers)
        self._signer.add_auth(request)
        return request

    def _send(self, operation: str, request: Any, *, stream: bool) -> Any:
        try:
            answer = self._pool.request(
                request.method,
                request.url,
                body=request.body,
                headers=dict(request.headers.items()),
                preload_content=not stream,
                redirect=False,
            )
        except urllib3.exceptions.HTTPError as exc:
            raise EndpointConnectionError(endpoint_url=f"{request.url} ({exc})") from exc
        if answer.status >= 300:
            body = answer.data
            answer.release_conn()
            raise _client_error(operation, answer.status, body)
        return answer

    def put(self, key: str, body: bytes, content_type: str = "application/octet-stream") -> None:
        """Store ``body`` under ``key`` (sent in one write, hashed once for the signature)."""
        request = self._signed("PUT", key, body, {"Content-Type": content_type})
        self._send("PutObject", request, stream=False)

    def chunks(self, key: str, size: int) -> Iterator[bytes]:
        """The object's bytes, ``size`` at a time (never the whole object in memory)."""
        answer = self._send("GetObject", self._signed("GET", key, None, {}), stream=True)
        read = False
        try:
            # The stored bytes as they are (boto3 does not decode a Content-Encoding either).
            yield from answer.stream(size, decode_content=False)
            read = True
        except urllib3.exceptions.HTTPError as exc:
            raise EndpointConnectionError(endpoint_url=f"{self.url(key)} ({exc})") from exc
        finally:
            if read:
                answer.release_conn()
            else:  # stopped early: a connection with unread bytes is never reused
                answer.close()

    def close(self) -> None:
        self._pool.clear()


_ERROR_CODE = re.compile(r"<Code>([^<]{1,200})</Code>")
_ERROR_MESSAGE = re.compile(r"<Message>([^<]{0,1000})</Message>")


def _client_error(operation: str, status: int, body: bytes) -> ClientError:
    """S3's error answer as boto3 raises it: its XML ``Code`` and ``Message`` (or the status)."""
    text = body[:4096].decode("utf-8", "replace")
    found = _ERROR_CODE.search(text)
    code = found.group(1) if found else str(status)
    found = _ERROR_MESSAGE.search(text)
    message = found.group(1) if found else ""
    if status == 404 and code == "404":
        code = "NoSuchKey"
    answer: Any = {
        "Error": {"Code": code, "Message": message},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    return ClientError(answer, operation)
