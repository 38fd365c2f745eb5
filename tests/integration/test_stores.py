"""S3 and both Postgres clusters of the local stack; control-database migrations."""

from __future__ import annotations

import os
import uuid
from contextlib import closing

import psycopg2
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError
from pydantic import SecretStr

from common import db
from common import migrate as migrations
from common.s3 import Objects
from common.s3 import client as s3_client
from common.settings import SharedSettings
from services.loaders.core.errors import PermanentError, TransientError, classify_source
from services.streamery.keys import encode_table

WAREHOUSE_DSN = "postgresql://postgres@127.0.0.1:5433/warehouse"


def test_s3_put_get_list(settings: SharedSettings) -> None:
    s3 = s3_client(settings)
    prefix = f"tests/{uuid.uuid4()}/"
    body = b'{"hello": "world"}\n' * 1000
    for name in ("a.jsonl", "b.jsonl"):
        s3.put_object(Bucket=settings.s3_bucket, Key=prefix + name, Body=body)
    got = s3.get_object(Bucket=settings.s3_bucket, Key=prefix + "a.jsonl")["Body"].read()
    assert got == body
    listed = s3.list_objects_v2(Bucket=settings.s3_bucket, Prefix=prefix)
    assert [o["Key"] for o in listed["Contents"]] == [prefix + "a.jsonl", prefix + "b.jsonl"]


def test_the_lean_object_client_reads_and_writes_what_boto3_does(settings: SharedSettings) -> None:
    """``Objects`` (the streamery's PUT, the loaders' GET) against the real S3 server: keys of
    every character a table segment may hold, both ways with boto3, and S3's failures raised
    as boto3 raises them, so the loaders classify them unchanged."""
    s3 = s3_client(settings)
    objects = Objects(settings, timeout_s=10.0)
    prefix = f"tests/{uuid.uuid4()}/"
    keys = [
        prefix + "plain.jsonl.gz",
        prefix + encode_table("a b/c?d#e&f=g+h%i ü 🚀 ~'\"") + "/0/x.jsonl.gz",
        prefix + "raw ü 🚀 +=&?#%41 ~.bin",
    ]
    body = os.urandom(300_000)
    for key in keys:
        objects.put(key, body, "application/gzip")
        got = s3.get_object(Bucket=settings.s3_bucket, Key=key)
        assert got["Body"].read() == body and got["ContentType"] == "application/gzip"
        s3.put_object(Bucket=settings.s3_bucket, Key=key + ".2", Body=body[:1000])
        assert b"".join(objects.chunks(key + ".2", 256)) == body[:1000]
        assert b"".join(objects.chunks(key, 1 << 20)) == body
    listed = s3.list_objects_v2(Bucket=settings.s3_bucket, Prefix=prefix)
    assert sorted(o["Key"] for o in listed["Contents"]) == sorted(keys + [k + ".2" for k in keys])

    with pytest.raises(ClientError) as missing:
        list(objects.chunks(prefix + "never-written", 1024))
    assert missing.value.response["Error"]["Code"] == "NoSuchKey"
    assert isinstance(classify_source(missing.value), PermanentError)

    forged = settings.model_copy(update={"s3_secret_key": SecretStr("not-the-secret")})
    with pytest.raises(ClientError) as refused:
        Objects(forged, timeout_s=10.0).put(prefix + "forged", b"x")
    assert refused.value.response["Error"]["Code"] in ("SignatureDoesNotMatch", "AccessDenied")
    assert isinstance(classify_source(refused.value), TransientError)
    assert "Contents" not in s3.list_objects_v2(Bucket=settings.s3_bucket, Prefix=prefix + "forged")

    closed = settings.model_copy(update={"s3_endpoint": "http://127.0.0.1:1"})
    with pytest.raises(EndpointConnectionError) as down:
        Objects(closed, timeout_s=2.0).put(prefix + "down", b"x")
    assert isinstance(classify_source(down.value), TransientError)


def test_both_postgres_clusters_are_separate_servers(settings: SharedSettings) -> None:
    with closing(db.connect()) as control, closing(psycopg2.connect(WAREHOUSE_DSN)) as warehouse:
        with control.cursor() as cur:
            cur.execute(
                "SELECT current_database(), inet_server_port(), current_setting('data_directory')"
            )
            control_row = cur.fetchone()
        with warehouse.cursor() as cur:
            cur.execute(
                "SELECT current_database(), inet_server_port(), current_setting('data_directory')"
            )
            warehouse_row = cur.fetchone()
    assert control_row is not None and warehouse_row is not None
    assert control_row[:2] == ("skein", 5432)
    assert warehouse_row[:2] == ("warehouse", 5433)
    assert control_row[2] != warehouse_row[2]


def test_migrations_apply_once_and_are_recorded(settings: SharedSettings) -> None:
    with closing(db.connect()) as conn:
        migrations.migrate(conn)  # whatever `make up` left, this brings it to the latest
        assert migrations.migrate(conn) == []  # and running again changes nothing
        with conn.cursor() as cur:
            cur.execute("SELECT version, name, checksum FROM schema_migrations ORDER BY version")
            recorded = cur.fetchall()
            cur.execute("SELECT to_regclass('clients') IS NOT NULL")
            clients_exists = cur.fetchone()
    expected = [(m.version, m.name, m.checksum) for m in migrations.available()]
    assert recorded == expected
    assert clients_exists == (True,)


def test_an_edited_applied_migration_is_refused(settings: SharedSettings) -> None:
    with closing(db.connect()) as conn:
        migrations.migrate(conn)
        with conn, conn.cursor() as cur:
            cur.execute("UPDATE schema_migrations SET checksum = 'edited' WHERE version = 1")
        try:
            try:
                migrations.migrate(conn)
            except migrations.MigrationError as exc:
                assert "was changed after it was applied" in str(exc)
            else:
                raise AssertionError("an edited migration was not refused")
        finally:
            with conn, conn.cursor() as cur:
                cur.execute(
                    "UPDATE schema_migrations SET checksum = %s WHERE version = 1",
                    (migrations.available()[0].checksum,),
                )
