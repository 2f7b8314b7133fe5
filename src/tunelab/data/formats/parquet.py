"""Parquet (.parquet), including image bytes or any other Arrow-typed columns."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq

from tunelab.data.formats.base import EMPTY_FIX, FORMATS, DataFormat, root_message
from tunelab.errors import DataError

class ParquetFormat(DataFormat):
    name = "parquet"
    extensions = (".parquet",)
    builder = "parquet"
    text = False

    def precheck(self, file: Path, shown: str) -> None:
        # datasets fails on a 0-row file with "BatchSize must be greater than 0".
        if (err := self.diagnose(file, shown)) is not None:
            raise err

    def diagnose(self, file: Path, shown: str) -> DataError | None:
        try:
            rows = pq.ParquetFile(file).metadata.num_rows
        except Exception as err:  # noqa: BLE001 - any reader failure means "not readable Parquet"
            return DataError(
                f"{shown}: not a readable Parquet file ({root_message(err)})",
                fix="re-export it as Parquet, or set data.format to the file's real format",
            )
        if rows == 0:
            return DataError(f"{shown}: no rows", fix=EMPTY_FIX)
        return None




FORMATS.register("parquet")(ParquetFormat())
