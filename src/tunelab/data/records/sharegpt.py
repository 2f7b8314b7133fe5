"""ShareGPT rows: `{"conversations": [{"from": "human", "value": "..."}, {"from": "gpt", ...}]}`."""

from __future__ import annotations

from typing import Any

from tunelab.config.schema import DataConfig
from tunelab.data.records.base import (
    RECORDS,
    RecordFormat,
    RowError,
    check_conversation,
    describe,
    message_text,
    turn_list,
)

# The speaker names ShareGPT exports use; anything else ("bot", "tool", ...) is an error, not a guess.
ROLE_OF = {"system": "system", "human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant"}


class ShareGptFormat(RecordFormat):
    name = "sharegpt"
    kind = "chat"

    def columns(self, cfg: DataConfig) -> list[str]:
        return ["conversations"]

    def convert(self, row: dict[str, Any], cfg: DataConfig) -> dict[str, Any]:
        messages = []
        for number, turn in enumerate(turn_list(row, "conversations"), 1):
            if not isinstance(turn, dict):
                raise RowError(f"message {number} is {describe(turn)}, not an object with from and value")
            speaker = turn.get("from")
            if speaker not in ROLE_OF:
                shown = "no 'from'" if speaker is None else f"unknown 'from' {speaker!r}"
                raise RowError(f"message {number} has {shown} (use system, human, user, gpt or assistant)")
            messages.append({"role": ROLE_OF[speaker], "content": message_text(turn, "value", number)})
        return {"messages": check_conversation(messages)}


RECORDS.register("sharegpt")(ShareGptFormat())
