"""The BigQuery loader: load jobs into a staging table, MERGE into the client's tables, nesting
kept as RECORD/REPEATED fields.

Its folder has the shape every loader has (``docs/architecture.md``, "Loaders"), and three
modules more, because BigQuery keeps nesting where the others de-nest into subtables:
``schema.py`` (a table's nested fields, and where each value of a record goes), ``plan.py``
(a lease's records as one newline-delimited JSON file of those fields) and ``names.py``
(BigQuery's field-name rules, which apply at every nesting level)."""
