"""Alpaca rows: `{"instruction": ..., "input": ..., "output": ...}` (input and system optional)."""

from __future__ import annotations

from typing import Any

from tunelab.config.schema import DataConfig
from tunelab.data.records.base import (
    RECORDS,
    RecordFormat,
    RowError,
    describe,
    text_field,
)


def _optional_text(row: dict[str, Any], column: str) -> str:
    """An optional column: absent or null reads as empty; any other non-string is an error."""
    value = row.get(column)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise RowError(f"{column!r} is {describe(value)}, not text")
    return value


class AlpacaFormat(RecordFormat):
    name = "alpaca"
    kind = "chat"
    optional = ("input", "system")

    def columns(self, cfg: DataConfig) -> list[str]:
        return ["instruction", "output"]

    def convert(self, row: dict[str, Any], cfg: DataConfig) -> dict[str, Any]:
        instruction = text_field(row, "instruction", blank_ok=False)
        output = text_field(row, "output", blank_ok=False)
        extra = _optional_text(row, "input")
        system = _optional_text(row, "system")
        # The original Alpaca prompt puts the input after the instruction as its own paragraph.
        user = f"{instruction}\n\n{extra}" if extra.strip() else instruction
        messages = [{"role": "system", "content": system}] if system.strip() else []
        messages += [{"role": "user", "content": user}, {"role": "assistant", "content": output}]
        return {"messages": messages}


RECORDS.register("alpaca")(AlpacaFormat())
