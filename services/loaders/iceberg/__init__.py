"""The Iceberg loader: each Stitch table an Apache Iceberg table (data files in the client's S3,
metadata in its catalog: a SQL catalog in a Postgres database, or a REST catalog), written with
pyiceberg and pyarrow, one catalog commit per lease, readable by any engine that reads Iceberg.

Nesting is kept as BigQuery keeps it (objects are structs, arrays lists), so this loader builds
on the BigQuery loader's pure planning (``bigquery/schema.py``, ``plan.py``, ``names.py``: the
same field names, splits and segments) and adds the Iceberg side. Its folder has the shape
every loader has (``docs/architecture.md``, "Loaders"); ``statements.py`` holds, instead of SQL,
the pure parts of an Iceberg commit: types, schemas, row filters, the snapshot summary that
records the batch ids, and the merge (greatest sequence wins). Three modules more:
``staging.py`` (a lease's planned rows read back per segment and typed as pyarrow wants them:
a commit conflict applies them again, so they are kept until the commit), ``tables.py`` (the
loader's own tables in the namespace, ``_sdc_rejected``, and the table properties it keeps);
``maintenance.py`` (``skein lake compact`` and ``expire``: an Iceberg table needs them, a
warehouse does not).
"""
