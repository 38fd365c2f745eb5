"""The Postgres loader: COPY into staging tables, one set-based merge per table, the batch ids
in ``_sdc_loads`` in the same transaction.

Its folder has the shape every loader has (``docs/architecture.md``, "Loaders"), and three
modules more, because its merge runs chunk by chunk beside the parsing and the other loaders'
staging and merge are single statements: ``staging.py`` (COPY from the spill file into a
temporary table), ``merge.py`` (a segment's merge and child-row replacement) and ``chunks.py``
(the merge thread that runs them a chunk at a time)."""
