from __future__ import annotations

from common import migrate as migrations


def test_migration_files_are_numbered_in_order_without_gaps() -> None:
    found = migrations.available()
    assert found, "no migration files found"
    assert [m.version for m in found] == list(range(1, len(found) + 1))
    assert all(m.sql.strip() for m in found)


def test_every_sql_file_in_the_folder_is_a_migration() -> None:
    names = sorted(p.name for p in migrations.MIGRATIONS_DIR.glob("*.sql"))
    assert names == [f"{m.version:04d}_{m.name}.sql" for m in migrations.available()]
