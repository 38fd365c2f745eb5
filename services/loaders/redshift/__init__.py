"""The Redshift loader: S3 staging + COPY FORMAT JSON, merge through staging tables.

Its folder has the shape every loader has (``docs/architecture.md``, "Loaders"), and one module
more, because its rows reach Redshift through S3: ``staging.py`` (a staged table written as gzip
JSON lines, uploaded with its JSONPaths and COPY'd into a staging table)."""
