"""Preference pairs: a prompt and two answers, the preferred (`chosen`) and the other (`rejected`).

Three layouts are read:

- `preference`: `{"prompt": str, "chosen": str, "rejected": str}`, rendered without a chat template
  (prompt + answer + EOS, as prompt-completion rows are);
- `chat-preference`: TRL's conversational layout, `{"prompt": [messages], "chosen": ..., "rejected": ...}`,
  where each answer is a string or a one-message list `[{"role": "assistant", "content": ...}]`;
- `openai-preference`: OpenAI's DPO fine-tuning JSONL, `{"input": {"messages": [...]},
  "preferred_output": [{"role": "assistant", ...}], "non_preferred_output": [...]}`.

The two chat layouts become `chat-preference` records, rendered with the run's chat template.

Unpaired feedback (KTO): one answer per row, labelled desirable (`true`) or not (`false`), as TRL's
"unpaired preference" datasets hold it — thumbs up/down on logged answers:

- `unpaired-preference`: `{"prompt": str, "completion": str, "label": bool}`;
- `chat-unpaired-preference`: the prompt is a message list and the completion a string or a
  one-message assistant list; these become `chat-unpaired` records.
"""

from __future__ import annotations

from typing import Any

from tunelab.config.schema import DataConfig
from tunelab.data.records.base import RECORDS, RecordFormat, RowError, describe, parse_messages, text_field, turn_list


def check_pair(chosen: str, rejected: str, names: tuple[str, str] = ("chosen", "rejected")) -> tuple[str, str]:
    """Two answers that can be compared: neither empty, and not the same text."""
    for name, answer in zip(names, (chosen, rejected), strict=True):
        if not answer.strip():
            raise RowError(f"{name!r} is empty")
    if chosen.strip() == rejected.strip():
        raise RowError(f"{names[0]!r} and {names[1]!r} are the same answer, so there is no preference to learn")
    return chosen, rejected


def answer_text(row: dict[str, Any], column: str) -> str:
    """An answer given as text or as a one-message assistant turn list (TRL's and OpenAI's layouts)."""
    value = row.get(column)
    if isinstance(value, str) or value is None:
        return text_field(row, column, blank_ok=True)
    if not isinstance(value, list):
        raise RowError(f"{column!r} is {describe(value)}, not text or a list with one assistant message")
    messages = parse_messages(value)
    if len(messages) != 1 or messages[0]["role"] != "assistant":
        raise RowError(f"{column!r} must hold exactly one assistant message (it holds "
                       f"{', '.join(m['role'] for m in messages) or 'none'})")
    return messages[0]["content"]


def prompt_conversation(turns: list[Any], column: str) -> list[dict[str, str]]:
    """The conversation an answer continues: a system message may come first, the last is the user's."""
    messages = parse_messages(turns)
    for number, message in enumerate(messages, 1):
        if message["role"] == "system" and number != 1:
            raise RowError(f"{column!r} message {number} is a system message; only the first may be one")
    if messages[-1]["role"] != "user":
        raise RowError(f"{column!r} must end with a user message (the answers reply to it), not "
                       f"{messages[-1]['role']}")
    return messages


class PreferenceFormat(RecordFormat):
    name = "preference"
    kind = "preference"

    def columns(self, cfg: DataConfig) -> list[str]:
        return ["prompt", "chosen", "rejected"]

    def convert(self, row: dict[str, Any], cfg: DataConfig) -> dict[str, Any]:
        prompt = text_field(row, "prompt", blank_ok=True)
        chosen, rejected = check_pair(text_field(row, "chosen", blank_ok=True),
                                      text_field(row, "rejected", blank_ok=True))
        return {"prompt": prompt, "chosen": chosen, "rejected": rejected}


class ChatPreferenceFormat(RecordFormat):
    name = "chat-preference"
    kind = "chat-preference"

    def columns(self, cfg: DataConfig) -> list[str]:
        return ["prompt", "chosen", "rejected"]

    def convert(self, row: dict[str, Any], cfg: DataConfig) -> dict[str, Any]:
        messages = prompt_conversation(turn_list(row, "prompt"), "prompt")
        chosen, rejected = check_pair(answer_text(row, "chosen"), answer_text(row, "rejected"))
        return {"messages": messages, "chosen": chosen, "rejected": rejected}


class OpenAIPreferenceFormat(RecordFormat):
    name = "openai-preference"
    kind = "chat-preference"

    def columns(self, cfg: DataConfig) -> list[str]:
        return ["input", "preferred_output", "non_preferred_output"]

    def convert(self, row: dict[str, Any], cfg: DataConfig) -> dict[str, Any]:
        given = row.get("input")
        if not isinstance(given, dict):
            raise RowError(f"'input' is {describe(given)}, not an object with 'messages'")
        messages = prompt_conversation(turn_list(given, "messages"), "input.messages")
        chosen, rejected = check_pair(answer_text(row, "preferred_output"), answer_text(row, "non_preferred_output"),
                                      ("preferred_output", "non_preferred_output"))
        return {"messages": messages, "chosen": chosen, "rejected": rejected}


def feedback_label(row: dict[str, Any]) -> bool:
    """The desirable/undesirable label: true/false (or 1/0, as exported thumbs often are)."""
    value = row.get("label")
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if value is None:
        raise RowError("'label' is missing")
    shown = repr(value) if isinstance(value, (str, int, float)) else describe(value)
    raise RowError(f"'label' is {shown}, not true/false (true: a desirable answer)")


class UnpairedFormat(RecordFormat):
    name = "unpaired-preference"
    kind = "unpaired"

    def columns(self, cfg: DataConfig) -> list[str]:
        return ["prompt", "completion", "label"]

    def convert(self, row: dict[str, Any], cfg: DataConfig) -> dict[str, Any]:
        return {"prompt": text_field(row, "prompt", blank_ok=True),
                "completion": text_field(row, "completion", blank_ok=False), "label": feedback_label(row)}


class ChatUnpairedFormat(RecordFormat):
    name = "chat-unpaired-preference"
    kind = "chat-unpaired"

    def columns(self, cfg: DataConfig) -> list[str]:
        return ["prompt", "completion", "label"]

    def convert(self, row: dict[str, Any], cfg: DataConfig) -> dict[str, Any]:
        messages = prompt_conversation(turn_list(row, "prompt"), "prompt")
        completion = answer_text(row, "completion")
        if not completion.strip():
            raise RowError("'completion' is empty")
        return {"messages": messages, "completion": completion, "label": feedback_label(row)}


RECORDS.register("preference")(PreferenceFormat())
RECORDS.register("chat-preference")(ChatPreferenceFormat())
RECORDS.register("openai-preference")(OpenAIPreferenceFormat())
RECORDS.register("unpaired-preference")(UnpairedFormat())
RECORDS.register("chat-unpaired-preference")(ChatUnpairedFormat())
