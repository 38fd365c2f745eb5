"""Run PyPI ``fakesnow`` as a Snowflake stand-in server: ``python -m support.fakesnow_server
PORT [DATA_DIR]`` (127.0.0.1). The real ``snowflake-connector-python`` talks to it over HTTP.

Two fixes are applied to fakesnow 0.12.1 here, both in its own bookkeeping, not in what it
emulates: (1) it records a table comment in its global catalog for every ``CREATE TEMPORARY
TABLE`` even when there is none, a write to a second DuckDB database that makes its MERGE
emulation (which creates a temporary table) fail inside an explicit transaction: the absent
comment is skipped; (2) it writes column names into its catalog as unescaped SQL literals, so a
column named ``Robert'); ...`` breaks the CREATE TABLE: single quotes are doubled.
"""

from __future__ import annotations

import sys
from typing import Any

import fakesnow.info_schema as info_schema
import fakesnow.transforms as transforms
import uvicorn

_extract = transforms.extract_comment_on_table


def _comment_only_when_given(expression: Any) -> Any:
    out = _extract(expression)
    found = out.args.get("table_comment")
    if found is not None and found[1] is None:
        del out.args["table_comment"]
    return out


_text_lengths = info_schema.insert_text_lengths_sql


def _lengths_escaped(catalog: str, schema: str, table: str, lengths: list[Any]) -> str:
    def esc(text: str) -> str:
        return text.replace("'", "''")

    escaped = [(esc(name), size) for name, size in lengths]
    return str(_text_lengths(esc(catalog), esc(schema), esc(table), escaped))


def main() -> None:
    transforms.extract_comment_on_table = _comment_only_when_given
    info_schema.insert_text_lengths_sql = _lengths_escaped  # type: ignore[assignment]
    from fakesnow.server import app

    port = int(sys.argv[1])
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main()
