"""Loading one lease into BigQuery (the only module that talks to the BigQuery API).

1. The dataset and the bookkeeping tables ``_sdc_loads`` and ``_sdc_rejected`` exist.
2. The lease's records become newline-delimited JSON rows of the table's schema, grown as they
   need (nested RECORD/REPEATED fields, type-split siblings); new fields are added to the table
   first (additive schema changes are all BigQuery allows, and all Skein needs).
3. One **load job** puts the rows into a staging table (expiring after a day).
4. One **query job** runs a transaction: per segment a ``MERGE`` (or a re-key check, an
   activation), the rejected records, and the batch ids into ``_sdc_loads``. Its job id is
   derived from the batch ids (``skein_<client>_<hash>_<n>``): two loaders holding the same
   batches (a lease that expired under a slow loader) submit the same id, so BigQuery runs it
   once and the second waits for the first's outcome. ``n`` moves on only past a job that
   failed. Batch ids already in ``_sdc_loads`` are skipped before loading and refused inside
   the transaction.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import bigquery

from common.wire import Header
from services.loaders.bigquery import statements
from services.loaders.bigquery.connection import Session
from services.loaders.bigquery.destination import BigQueryTarget
from services.loaders.bigquery.names import BigQueryNames
from services.loaders.bigquery.plan import LeasePlan
from services.loaders.bigquery.schema import TableSchema
from services.loaders.core import faults, notes
from services.loaders.core.errors import PermanentError, TransientError
from services.loaders.core.reader import Record

NAMES = BigQueryNames()
KEY_NOTE = "skein_key_columns"  # in the table description: the table's key, for re-keying
STAGING_TTL = timedelta(days=1)
MAX_COMMIT_ATTEMPTS = 10_000

LOADS_SCHEMA = [
    bigquery.SchemaField("batch_id", "INTEGER", "REQUIRED"),
    bigquery.SchemaField("table_name", "STRING", "REQUIRED"),
    bigquery.SchemaField("lease_token", "STRING"),
    bigquery.SchemaField("records", "INTEGER"),
    bigquery.SchemaField("job_id", "STRING"),
    bigquery.SchemaField("loaded_at", "TIMESTAMP"),
]
REJECTED_SCHEMA = [
    bigquery.SchemaField("table_name", "STRING", "REQUIRED"),
    bigquery.SchemaField("record", "STRING", "REQUIRED"),
    bigquery.SchemaField("reason", "STRING", "REQUIRED"),
    bigquery.SchemaField("batch_ids", "INTEGER", "REPEATED"),
    bigquery.SchemaField("rejected_at", "TIMESTAMP"),
]


class AlreadyLoaded(Exception):
    """Another job committed these batches first: nothing to do."""


def ensure_metadata(session: Session) -> None:
    if session.ready:
        return
    client = session.client
    dataset = bigquery.Dataset(f"{session.target.project}.{session.target.dataset}")
    dataset.location = session.target.location
    # Look before creating: a service account may read and write a dataset it may not create.
    try:
        client.get_dataset(dataset.reference, retry=session.retry, timeout=session.timeout)
    except gexc.NotFound:
        client.create_dataset(dataset, exists_ok=True, retry=session.retry, timeout=session.timeout)
    for name, schema in ((statements.LOADS, LOADS_SCHEMA), (statements.REJECTED, REJECTED_SCHEMA)):
        try:
            client.get_table(session.ref(name), retry=session.retry, timeout=session.timeout)
        except gexc.NotFound:
            table = bigquery.Table(session.ref(name), schema=schema)
            client.create_table(table, exists_ok=True, retry=session.retry, timeout=session.timeout)
    session.ready = True


def loaded_batches(session: Session, batch_ids: list[int]) -> set[int]:
    job = session.client.query(
        f"SELECT batch_id FROM {session.dataset.table(statements.LOADS)} "  # noqa: S608
        f"WHERE batch_id IN {statements.BATCH_IDS}",
        job_config=bigquery.QueryJobConfig(
            query_parameters=[bigquery.ArrayQueryParameter("batch_ids", "INT64", batch_ids)]
        ),
        retry=session.retry,
        timeout=session.timeout,
    )
    return {int(row[0]) for row in job.result(timeout=session.job_timeout)}


def existing(session: Session, table: str) -> tuple[TableSchema, tuple[str, ...] | None]:
    """The table's schema as it is now (empty if it does not exist) and its recorded key."""
    try:
        found = session.client.get_table(
            session.ref(table), retry=session.retry, timeout=session.timeout
        )
    except gexc.NotFound:
        return TableSchema(table), None
    schema = TableSchema.from_api(table, [f.to_api_repr() for f in found.schema])
    return schema, _key_of(found.description)


def _key_of(description: str | None) -> tuple[str, ...] | None:
    try:
        note = json.loads(description or "")
    except ValueError:
        return None
    key = note.get(KEY_NOTE) if isinstance(note, dict) else None
    return tuple(key) if isinstance(key, list) else None


def _description(key: tuple[str, ...]) -> str:
    return json.dumps({KEY_NOTE: list(key)})


def apply_schema(session: Session, schema: TableSchema, key: tuple[str, ...] | None) -> None:
    """Create the table, or add the fields the lease needs (BigQuery's additive schema change)."""
    fields = [bigquery.SchemaField.from_api_repr(f) for f in schema.api()]
    client = session.client
    if not schema.exists:
        if not fields:
            return
        notes.note_column(
            schema.name, "table_created", None, None, {f.name: f.field_type.lower() for f in fields}
        )
        table = bigquery.Table(session.ref(schema.name), schema=fields)
        if key is not None:
            table.description = _description(key)
        schema.exists = True
        try:
            client.create_table(table, retry=session.retry, timeout=session.timeout)
            schema.added = False
            return
        except gexc.Conflict:
            schema.added = True  # created meanwhile by another loader: add ours to its fields
    if schema.added:
        table = client.get_table(session.ref(schema.name), retry=session.retry)
        have = {f.name for f in table.schema}
        grown = [_grown(f, fields) for f in table.schema]
        new = [f for f in fields if f.name not in have]
        for f in new:
            notes.note_column(schema.name, "column_added", f.name, None, f.field_type.lower())
        table.schema = grown + new
        client.update_table(table, ["schema"], retry=session.retry, timeout=session.timeout)
    schema.added = False


def _grown(existing: bigquery.SchemaField, wanted: list[bigquery.SchemaField]) -> Any:
    """A RECORD field with the nested fields it gained (BigQuery adds those in place too)."""
    match = next((w for w in wanted if w.name == existing.name), None)
    if match is None or existing.field_type not in ("RECORD", "STRUCT"):
        return existing
    have = {f.name for f in existing.fields}
    children = [_grown(f, list(match.fields)) for f in existing.fields]
    children += [f for f in match.fields if f.name not in have]
    api = existing.to_api_repr()
    api["fields"] = [c.to_api_repr() for c in children]
    return bigquery.SchemaField.from_api_repr(api)


def set_key(session: Session, table: str, key: tuple[str, ...]) -> None:
    found = session.client.get_table(session.ref(table), retry=session.retry)
    found.description = _description(key)
    session.client.update_table(
        found, ["description"], retry=session.retry, timeout=session.timeout
    )


def job_base(target: BigQueryTarget, client_id: int, table: str, batch_ids: list[int]) -> str:
    """The stem of this lease's job ids and staging table: a function of the batch ids."""
    ident = json.dumps([target.project, target.dataset, table, sorted(batch_ids)])
    return f"skein_{client_id}_{hashlib.sha256(ident.encode()).hexdigest()[:24]}"


def stage(session: Session, plan: LeasePlan, staging: str, base: str) -> None:
    """One load job: the lease's rows (newline-delimited JSON) into the staging table."""
    config = bigquery.LoadJobConfig(
        source_format=bigquery.SourceFormat.NEWLINE_DELIMITED_JSON,
        schema=[bigquery.SchemaField.from_api_repr(f) for f in plan.staging_fields()],
        write_disposition=bigquery.WriteDisposition.WRITE_TRUNCATE,
        create_disposition=bigquery.CreateDisposition.CREATE_IF_NEEDED,
    )
    job = session.client.load_table_from_file(
        plan.file,
        session.ref(staging),
        rewind=True,
        job_id=f"{base}_stage_{uuid.uuid4().hex[:12]}",
        job_config=config,
        timeout=session.timeout,
    )
    job.result(timeout=session.job_timeout)
    _expire(session, staging)
    for segment in plan.segments:
        if not segment.rows:
            continue
        name = statements.winners_table(staging, segment)
        ranked = session.client.query(
            statements.winners(session.dataset.table(staging), segment),
            job_config=bigquery.QueryJobConfig(
                destination=session.ref(name),
                write_disposition=bigquery.WriteDisposition.WRITE_TRUNCATE,
            ),
            job_id=f"{base}_winners_{uuid.uuid4().hex[:12]}",
            retry=session.retry,
            timeout=session.timeout,
            job_retry=None,
        )
        ranked.result(timeout=session.job_timeout)
        _expire(session, name)


def _expire(session: Session, name: str) -> None:
    """A staging table left behind by a crash is cleaned up by BigQuery a day later."""
    table = session.client.get_table(session.ref(name), retry=session.retry)
    table.expires = datetime.now(UTC) + STAGING_TTL
    session.client.update_table(table, ["expires"], retry=session.retry, timeout=session.timeout)


def drop_staging(session: Session, plan: LeasePlan, staging: str) -> None:
    names = [staging] + [statements.winners_table(staging, s) for s in plan.segments if s.rows]
    for name in names:
        session.client.delete_table(session.ref(name), not_found_ok=True, retry=session.retry)


def _refusal(exc: Exception) -> Exception | None:
    """The load error for a failed check (ours, by its message), or None."""
    if statements.ALREADY_LOADED in str(exc):
        # Some of these batches were committed under another lease's job: retry, and the next
        # lease skips them (acknowledging now would drop the others).
        return TransientError(f"batches committed concurrently: {exc}")
    if statements.CANNOT_REKEY in str(exc):
        return PermanentError(
            f"key names changed but the existing rows cannot be re-keyed (nulls or duplicates "
            f"in the new key); fix the rows or the key names, then retry the batch ({exc})"
        )
    return None


def check(session: Session, sql: str, params: list[Any]) -> None:
    try:
        session.client.query(
            sql,
            job_config=bigquery.QueryJobConfig(query_parameters=params),
            retry=session.retry,
            timeout=session.timeout,
            job_retry=None,
        ).result(timeout=session.job_timeout)
    except gexc.GoogleAPICallError as exc:
        refusal = _refusal(exc)
        if refusal is not None:
            raise refusal from exc
        raise


def commit(session: Session, sql: str, base: str, params: list[Any]) -> None:
    """Run the commit transaction under the first job id ``<base>_<n>`` not taken by a failed
    job. A running or succeeded job under that id is a commit of the same batches by another
    loader (or by this one before a crash): its outcome is awaited, never repeated.

    Raises :class:`AlreadyLoaded` when such a job committed them."""
    client = session.client
    job: Any
    for attempt in range(MAX_COMMIT_ATTEMPTS):
        job_id = f"{base}_{attempt}"
        config = bigquery.QueryJobConfig(
            query_parameters=[*params, bigquery.ScalarQueryParameter("job_id", "STRING", job_id)]
        )
        ours = True
        try:
            job = client.query(
                sql,
                job_config=config,
                job_id=job_id,
                retry=session.retry,
                timeout=session.timeout,
                job_retry=None,
            )
        except gexc.Conflict:
            ours = False
            job = client.get_job(job_id, retry=session.retry, timeout=session.timeout)
            if job.state == "DONE" and job.error_result:
                continue  # an earlier attempt that failed: the next id is ours to try
        try:
            job.result(timeout=session.job_timeout)
        except gexc.GoogleAPICallError as exc:
            refusal = _refusal(exc)
            if refusal is not None:
                raise refusal from exc
            raise
        if not ours:
            raise AlreadyLoaded(job_id)
        return
    raise PermanentError(f"{MAX_COMMIT_ATTEMPTS} failed commit attempts for {base}")


@dataclass
class LeaseWork:
    client_id: int
    table_source: str
    batch_ids: list[int]
    batch_records: list[int]
    lease_token: str


def load(
    session: Session, plan: LeasePlan, work: LeaseWork, previous_key: tuple[str, ...] | None
) -> tuple[int, int]:
    """Load a planned lease (``plan`` already fed every event); (rows staged, rejected)."""
    table = plan.schema.name
    segments = plan.segments
    if not plan.staged_rows and not any(s.activate_version is not None for s in segments):
        return 0, 0
    final_key = statements.final_key(segments, previous_key)
    apply_schema(session, plan.schema, final_key if previous_key is None else previous_key)
    if not plan.schema.exists:
        for segment in segments:  # only rejections, and activations of a table never loaded
            segment.activate_version = None
    base = job_base(session.target, work.client_id, table, work.batch_ids)
    staging = f"_sdc_stage_{base}"
    if plan.staged_rows:
        stage(session, plan, staging, base)
    sql = statements.commit(
        session.dataset,
        table,
        staging if plan.staged_rows else table,
        segments,
        previous_key,
        plan.rejected,
    )
    params = [
        bigquery.ArrayQueryParameter("batch_ids", "INT64", work.batch_ids),
        bigquery.ArrayQueryParameter("batch_records", "INT64", work.batch_records),
        bigquery.ScalarQueryParameter("table_name", "STRING", work.table_source),
        bigquery.ScalarQueryParameter("lease_token", "STRING", work.lease_token),
        *(
            bigquery.ScalarQueryParameter(name, "INT64", version)
            for name, version in statements.versions(segments).items()
        ),
    ]
    check(session, statements.precheck(session.dataset, table, segments, previous_key), params)
    faults.hit("before_commit")
    commit(session, sql, base, params)
    if final_key is not None and final_key != previous_key:
        set_key(session, table, final_key)
    if plan.staged_rows:
        drop_staging(session, plan, staging)
    return plan.staged_rows - plan.rejected, plan.rejected


def load_events(
    session: Session, work: LeaseWork, events: Iterable[Header | Record]
) -> tuple[int, int]:
    """Read the table, plan the lease's events against it, load: (rows, rejected records)."""
    ensure_metadata(session)
    done = loaded_batches(session, work.batch_ids)
    if done == set(work.batch_ids):
        return 0, 0  # committed before (a crash between commit and ack): nothing to do
    if done:
        # Some of them committed under another lease: retry; the next lease skips those.
        raise TransientError(f"batches committed concurrently: {sorted(done)} already loaded")
    schema, key = existing(session, NAMES.table(work.table_source))
    plan = LeasePlan(work.table_source, NAMES, schema)
    try:
        for event in events:
            plan.feed(event)
        return load(session, plan, work, key)
    except AlreadyLoaded:
        return 0, 0
    finally:
        plan.close()
