"""The tables of a client's namespace as the loader reads and keeps them: the namespace itself,
the loaded tables (their properties: no commit retries of pyiceberg's own, the key), and
``_sdc_rejected``, where records no table can hold go.

Iceberg commits one table at a time, so rejected records cannot share the data's commit. They
are committed first, idempotently: their rows carry the lease's first batch id, and a retry of
the same batches (the first one is the same until it commits) replaces the rows an earlier,
uncommitted attempt left instead of adding them again.
"""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime

import pyarrow as pa
from pyiceberg.exceptions import (
    CommitFailedException,
    NamespaceAlreadyExistsError,
    NoSuchTableError,
    TableAlreadyExistsError,
)
from pyiceberg.expressions import And, EqualTo
from pyiceberg.io.pyarrow import schema_to_pyarrow
from pyiceberg.schema import Schema
from pyiceberg.table import Table
from pyiceberg.types import ListType, LongType, NestedField, StringType, TimestamptzType

from services.loaders.core.errors import TransientError
from services.loaders.iceberg import statements
from services.loaders.iceberg.connection import Session, check_io

REJECTED = "_sdc_rejected"
REJECTED_SCHEMA = Schema(
    NestedField(1, "table_name", StringType(), required=False),
    NestedField(2, "record", StringType(), required=False),
    NestedField(3, "reason", StringType(), required=False),
    NestedField(4, "batch_id", LongType(), required=False),  # the lease's first
    NestedField(5, "batch_ids", ListType(6, LongType(), element_required=False), required=False),
    NestedField(7, "rejected_at", TimestamptzType(), required=False),
)
ATTEMPTS = 5


def ensure_ready(session: Session) -> None:
    """The namespace and ``_sdc_rejected`` exist (once per session)."""
    if session.ready:
        return
    with contextlib.suppress(NamespaceAlreadyExistsError):
        session.catalog.create_namespace(session.namespace)
    if find(session, REJECTED) is None:
        create(session, REJECTED, REJECTED_SCHEMA, {})
    session.ready = True


def find(session: Session, name: str) -> Table | None:
    """The table as the catalog has it now, or None."""
    try:
        table = session.catalog.load_table(session.identifier(name))
    except NoSuchTableError:
        return None
    check_io(session, table)
    return without_own_retries(table)


def create(session: Session, name: str, schema: Schema, properties: dict[str, str]) -> Table:
    """A new table (or the one another loader just created)."""
    try:
        table = session.catalog.create_table(
            session.identifier(name),
            schema=schema,
            properties={**statements.NO_COMMIT_RETRIES, **properties},
        )
    except TableAlreadyExistsError:
        table = session.catalog.load_table(session.identifier(name))
    check_io(session, table)
    return without_own_retries(table)


def without_own_retries(table: Table) -> Table:
    """pyiceberg retries a lost commit race itself by re-applying the snapshot to the new
    table state: that skips the check for batch ids the winner committed. Off on every table
    the loader writes (its own metadata commit, once)."""
    key, value = next(iter(statements.NO_COMMIT_RETRIES.items()))
    if table.properties.get(key) == value:
        return table
    with table.transaction() as tx:
        tx.set_properties(statements.NO_COMMIT_RETRIES)
    return table.refresh()


def write_rejected(
    session: Session,
    table_source: str,
    batch_ids: list[int],
    lease_token: str,
    rejected: list[tuple[str, str]],
) -> None:
    """The lease's rejected records into ``_sdc_rejected``, replacing an earlier attempt's."""
    if not rejected:
        return
    now = datetime.now(UTC)
    rows = [
        {
            "table_name": table_source,
            "record": record,
            "reason": reason,
            "batch_id": batch_ids[0],
            "batch_ids": batch_ids,
            "rejected_at": now,
        }
        for record, reason in rejected
    ]
    props = statements.summary(batch_ids, lease_token)
    same = And(
        EqualTo(term="table_name", value=table_source),
        EqualTo(term="batch_id", value=batch_ids[0]),
    )
    for _ in range(ATTEMPTS):
        table = find(session, REJECTED)
        if table is None:
            table = create(session, REJECTED, REJECTED_SCHEMA, {})
        data = pa.Table.from_pylist(rows, schema=schema_to_pyarrow(table.schema()))
        tx = table.transaction()
        earlier = table.scan(row_filter=same, selected_fields=("batch_id",), limit=1).to_arrow()
        if earlier.num_rows:
            tx.overwrite(data, overwrite_filter=same, snapshot_properties=props)
        else:
            tx.append(data, snapshot_properties=props)
        try:
            tx.commit_transaction()
            return
        except CommitFailedException:
            continue
    raise TransientError(f"{ATTEMPTS} commits to {REJECTED} lost to concurrent writers")
