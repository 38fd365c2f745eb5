"""Sessions to a client's Iceberg catalog: a pyiceberg catalog (SQL on the client's Postgres
database, or REST) whose file IO writes to the client's S3 with the client's key pair.

The SQL catalog is pinned to the address the network policy vetted (libpq's ``hostaddr``
through SQLAlchemy's URL), with the loader's connect timeout and the client's ``sslmode``. The
S3 endpoint and a REST catalog's URL are checked by the policy but resolved again by their
clients (pyarrow's S3 filesystem, requests); plain ``http://`` ones must therefore be on an
operator-listed network (``SKEIN_DESTINATION_ALLOWED_NETWORKS``). A REST catalog may hand a
table's file IO other S3 settings; the loader refuses to write through any endpoint other than
the destination's (``check_io``).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

from pyiceberg.catalog import Catalog
from pyiceberg.io import (
    S3_ACCESS_KEY_ID,
    S3_CONNECT_TIMEOUT,
    S3_ENDPOINT,
    S3_REGION,
    S3_REQUEST_TIMEOUT,
    S3_SECRET_ACCESS_KEY,
)
from pyiceberg.table import Table
from sqlalchemy.engine import URL

from services.loaders.iceberg.destination import (
    DestinationError,
    IcebergTarget,
    RestCatalog,
    SqlCatalog,
)

# The file IO every session uses: pyarrow's (its S3 filesystem; not fsspec's).
PY_IO_IMPL = "pyiceberg.io.pyarrow.PyArrowFileIO"


@dataclass
class Session:
    catalog: Catalog
    target: IcebergTarget
    ready: bool = False  # the namespace and the loader's own tables known to exist
    tables: dict[str, Table] = field(default_factory=dict)  # loaded this session, by name

    @property
    def namespace(self) -> tuple[str]:
        return (self.target.namespace,)

    def identifier(self, table: str) -> tuple[str, str]:
        return (self.target.namespace, table)


def sql_url(catalog: SqlCatalog, pinned: dict[str, str], connect_timeout_s: int) -> URL:
    """The SQL catalog's SQLAlchemy URL: the client's libpq parameters (the allow-listed
    ones), its password, and the vetted address of its host."""
    params = catalog.params
    query: dict[str, str] = {
        "connect_timeout": str(int(params.get("connect_timeout") or 0) or connect_timeout_s)
    }
    for name in ("sslmode", "sslrootcert"):
        if params.get(name):
            query[name] = str(params[name])
    host = str(params["host"])
    if pinned.get(host):
        query["hostaddr"] = pinned[host]
    query["application_name"] = "skein-loader-iceberg"
    return URL.create(
        "postgresql+psycopg2",
        username=params.get("user"),
        password=catalog.password,
        host=host,
        port=int(params["port"]) if params.get("port") else None,
        database=params.get("dbname"),
        query=query,
    )


def properties(
    target: IcebergTarget, connect_timeout_s: int, request_timeout_s: float
) -> dict[str, str]:
    """The catalog's properties: where tables live and how their files are written."""
    props = {
        "warehouse": target.warehouse,
        "py-io-impl": PY_IO_IMPL,
        S3_ACCESS_KEY_ID: target.access_key_id,
        S3_SECRET_ACCESS_KEY: target.secret_access_key,
        S3_REGION: target.s3_region,
        S3_CONNECT_TIMEOUT: str(float(connect_timeout_s)),
        S3_REQUEST_TIMEOUT: str(float(request_timeout_s)),
    }
    if target.s3_endpoint:
        props[S3_ENDPOINT] = target.s3_endpoint
    return props


def connect(
    target: IcebergTarget,
    pinned: dict[str, str],
    connect_timeout_s: int,
    request_timeout_s: float,
) -> Session:
    props = properties(target, connect_timeout_s, request_timeout_s)
    catalog: Catalog
    if isinstance(target.catalog, SqlCatalog):
        from pyiceberg.catalog.sql import SqlCatalog as PySqlCatalog

        url = sql_url(target.catalog, pinned, connect_timeout_s)
        catalog = PySqlCatalog(
            target.catalog_name,
            uri=url.render_as_string(hide_password=False),
            pool_pre_ping="true",
            **props,
        )
    else:
        from pyiceberg.catalog.rest import RestCatalog as PyRestCatalog

        rest: RestCatalog = target.catalog
        extra: dict[str, str] = {}
        if rest.token:
            extra["token"] = rest.token
        if rest.credential:
            extra["credential"] = rest.credential
        catalog = PyRestCatalog(target.catalog_name, uri=rest.uri, **props, **extra)
    return Session(catalog, target)


def check_io(session: Session, table: Table) -> None:
    """Refuse a table whose file IO would write anywhere but the destination's S3 endpoint
    with its own key pair (a REST catalog's table config can change both)."""
    io: dict[str, Any] = dict(table.io.properties)
    target = session.target
    if io.get(S3_ENDPOINT) != target.s3_endpoint and (io.get(S3_ENDPOINT) or target.s3_endpoint):
        raise DestinationError(
            f"the catalog points table {table.name()} at S3 endpoint {io.get(S3_ENDPOINT)!r}, "
            f"not the destination's {target.s3_endpoint!r}"
        )
    if io.get(S3_ACCESS_KEY_ID) != target.access_key_id:
        raise DestinationError(
            f"the catalog hands table {table.name()} other S3 credentials than the destination's"
        )


def close(session: Session) -> None:
    engine = getattr(session.catalog, "engine", None)
    if engine is not None:
        with contextlib.suppress(Exception):
            engine.dispose()
    session.tables.clear()
