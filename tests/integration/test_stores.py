"""S3 and both Postgres clusters of the local stack; control-database migrations."""

from __future__ import annotations

import uuid
from contextlib import closing

import psycopg2

from common import db
from common import migrate as migrations
from common.s3 import client as s3_client
from common.settings import SharedSettings

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
