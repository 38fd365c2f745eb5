"""The Postgres loader: COPY into staging tables, one set-based merge per table, the batch ids
in ``_sdc_loads`` in the same transaction.

Its folder has the shape every loader has (``docs/architecture.md``, "Loaders"), and two
modules more, because its merge runs chunk by chunk beside the parsing and the other loaders'
staging and merge are single statements: ``staging.py`` (COPY from the spill file into a
temporary table) and ``merge.py`` (a segment's merge and child-row replacement)."""
