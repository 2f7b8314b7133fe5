"""Raw-text rows for domain adaptation: the column `data.text_column` (default "text")."""

from __future__ import annotations

from typing import Any

from tunelab.config.schema import DataConfig
from tunelab.data.records.base import RECORDS, RecordFormat, RowError, text_field


class TextFormat(RecordFormat):
    name = "text"
    kind = "text"

    def columns(self, cfg: DataConfig) -> list[str]:
        return [cfg.text_column]

    def convert(self, row: dict[str, Any], cfg: DataConfig) -> dict[str, Any]:
        value = text_field(row, cfg.text_column, blank_ok=True)
        if not value.strip():
            raise RowError("empty text")
        return {"text": value}  # exact: leading and trailing whitespace are part of the document


RECORDS.register("text")(TextFormat())
