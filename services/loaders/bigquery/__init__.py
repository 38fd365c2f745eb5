"""The BigQuery loader: load jobs into a staging table, MERGE into the client's tables, nesting
kept as RECORD/REPEATED fields."""
