"""The Snowflake loader: stage + COPY INTO, MERGE, VARIANT for nested data.

Its folder has the shape every loader has (``docs/architecture.md``, "Loaders"), and one module
more, because its rows reach Snowflake through a stage: ``staging.py`` (a segment's rows as a
Parquet file, PUT into the schema's stage and COPY'd into a staging table)."""
