"""Prompt-only rows for RL with verifiable rewards (GRPO): a prompt, and the columns rewards read.

- `prompt-only`: `{"prompt": str, ...}` — rendered without a chat template;
- `chat-prompt-only`: `{"prompt": [messages ending with a user turn], ...}` (TRL's conversational
  prompt-only layout), rendered with the run's chat template and its generation prompt.

Every other column of the row (a reference answer, a label, test cases) is kept, as one JSON object
in the `extra` column, for the reward functions (objectives/rewards.py) to read by name. The model
writes the answers itself, during training, so the rows hold none.
"""

from __future__ import annotations

import json
from typing import Any

from tunelab.config.schema import DataConfig
from tunelab.data.records.base import RECORDS, RecordFormat, RowError, text_field, turn_list
from tunelab.data.records.preference import prompt_conversation


def extra_columns(row: dict[str, Any]) -> str:
    """The row's other columns as one JSON object (Arrow values: text, numbers, lists, objects)."""
    try:
        return json.dumps({k: v for k, v in row.items() if k != "prompt"}, ensure_ascii=False, default=str)
    except (TypeError, ValueError) as err:
        raise RowError(f"a column cannot be kept for the rewards ({err})") from None


class PromptOnlyFormat(RecordFormat):
    name = "prompt-only"
    kind = "prompt-only"
    keeps_other_columns = True

    def columns(self, cfg: DataConfig) -> list[str]:
        return ["prompt"]

    def convert(self, row: dict[str, Any], cfg: DataConfig) -> dict[str, Any]:
        prompt = text_field(row, "prompt", blank_ok=False)
        return {"prompt": prompt, "extra": extra_columns(row)}


class ChatPromptOnlyFormat(RecordFormat):
    name = "chat-prompt-only"
    kind = "chat-prompt-only"
    keeps_other_columns = True

    def columns(self, cfg: DataConfig) -> list[str]:
        return ["prompt"]

    def convert(self, row: dict[str, Any], cfg: DataConfig) -> dict[str, Any]:
        return {"messages": prompt_conversation(turn_list(row, "prompt"), "prompt"), "extra": extra_columns(row)}


RECORDS.register("prompt-only")(PromptOnlyFormat())
RECORDS.register("chat-prompt-only")(ChatPromptOnlyFormat())
