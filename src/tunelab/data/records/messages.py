"""OpenAI-style chat rows: `{"messages": [{"role": "user", "content": "..."}, ...]}`."""

from __future__ import annotations

from typing import Any

from tunelab.config.schema import DataConfig
from tunelab.data.records.base import RECORDS, RecordFormat, check_conversation, parse_messages, turn_list


class MessagesFormat(RecordFormat):
    name = "messages"
    kind = "chat"

    def columns(self, cfg: DataConfig) -> list[str]:
        return ["messages"]

    def convert(self, row: dict[str, Any], cfg: DataConfig) -> dict[str, Any]:
        return {"messages": check_conversation(parse_messages(turn_list(row, "messages")))}


RECORDS.register("messages")(MessagesFormat())
