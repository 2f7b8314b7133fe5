"""Prompt/completion rows: `{"prompt": ..., "completion": ...}`; loss goes on the completion."""

from __future__ import annotations

from typing import Any

from tunelab.config.schema import DataConfig
from tunelab.data.records.base import RECORDS, RecordFormat, text_field


class PromptCompletionFormat(RecordFormat):
    name = "prompt-completion"
    kind = "prompt-completion"

    def columns(self, cfg: DataConfig) -> list[str]:
        return ["prompt", "completion"]

    def convert(self, row: dict[str, Any], cfg: DataConfig) -> dict[str, Any]:
        # An empty prompt is valid (unconditional generation); an empty completion teaches nothing.
        prompt = text_field(row, "prompt", blank_ok=True)
        completion = text_field(row, "completion", blank_ok=False)
        return {"prompt": prompt, "completion": completion}


RECORDS.register("prompt-completion")(PromptCompletionFormat())
