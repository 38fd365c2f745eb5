"""Staging a Snowflake load: a segment's spill written as a Parquet file of string columns,
``PUT`` into the schema's internal stage and ``COPY INTO`` a temporary all-VARCHAR staging table
(the ``MERGE`` casts). Parquet, not CSV: fakesnow's CSV ``COPY`` mis-names columns past the
tenth and guesses types; Parquet with ``MATCH_BY_COLUMN_NAME`` loads the same way in Snowflake.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pa_parquet

from services.loaders.core.plan import Staged
from services.loaders.core.system_columns import ROW
from services.loaders.snowflake import statements as S


def stage(cur: Any, schema: str, staged: Staged, name: str) -> list[str]:
    """PUT the spill as a Parquet file into the schema's stage and COPY it into a temporary
    all-VARCHAR staging table; its data columns (casts happen in the MERGE)."""
    order = staged.order
    prefix = name.lower()
    cur.execute(S.create_staging(name, order))
    with tempfile.TemporaryDirectory(prefix="skein-snowflake-") as tmp:
        spill = os.path.join(tmp, "rows.csv")
        with open(spill, "wb") as out:
            for chunk in staged.spill.text(len(order)):
                out.write(chunk)
        path = os.path.join(tmp, f"{prefix}.parquet")
        to_parquet(spill, path, [S.column(c) for c in order])
        cur.execute(S.put(schema, path, prefix))
        cur.execute(S.copy_into(schema, name, prefix))
    return [c for c in order if c != ROW]


def to_parquet(csv_path: str, parquet_path: str, names: list[str]) -> None:
    """The spill's CSV as Parquet string columns, streamed block by block: an enclosed empty
    field stays an empty string, an unenclosed one is null."""
    reader = pa_csv.open_csv(
        csv_path,
        read_options=pa_csv.ReadOptions(column_names=names, block_size=4 << 20),
        parse_options=pa_csv.ParseOptions(newlines_in_values=True),
        convert_options=pa_csv.ConvertOptions(
            column_types={n: pa.string() for n in names},
            null_values=[""],
            strings_can_be_null=True,
            quoted_strings_can_be_null=False,
        ),
    )
    with pa_parquet.ParquetWriter(parquet_path, reader.schema) as writer:
        for batch in reader:
            writer.write_batch(batch)
