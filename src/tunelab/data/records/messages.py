"""OpenAI-style chat rows: `{"messages": [{"role": "user", "content": "..."}, ...]}`."""

from __future__ import annotations

from typing import Any

from tunelab.config.schema import DataConfig
from tunelab.data.records.base import (
    RECORDS,
    ROLES,
    RecordFormat,
    RowError,
    check_conversation,
    describe,
    message_text,
    turn_list,
)


class MessagesFormat(RecordFormat):
    name = "messages"
    kind = "chat"

    def columns(self, cfg: DataConfig) -> list[str]:
        return ["messages"]

    def convert(self, row: dict[str, Any], cfg: DataConfig) -> dict[str, Any]:
        messages = []
        for number, turn in enumerate(turn_list(row, "messages"), 1):
            if not isinstance(turn, dict):
                raise RowError(f"message {number} is {describe(turn)}, not an object with role and content")
            role = turn.get("role")
            if role not in ROLES:
                # Only the three roles every chat template knows; "human", "bot"... would be guesses.
                shown = "no role" if role is None else f"unknown role {role!r}"
                raise RowError(f"message {number} has {shown} (use system, user or assistant)")
            # Other keys ("name", "tool_calls", ...) are dropped: templates read role and content only.
            messages.append({"role": role, "content": message_text(turn, "content", number)})
        return {"messages": check_conversation(messages)}


RECORDS.register("messages")(MessagesFormat())
