"""The record-format interface: how one raw row of causal-lm data becomes one canonical row.

Every record format turns a row (a dict, as `datasets` yields it) into one of these canonical layouts,
its `kind`:

- "chat": `{"messages": [{"role": "system" | "user" | "assistant", "content": str}, ...]}`
- "prompt-completion": `{"prompt": str, "completion": str}`
- "text": `{"text": str}`
- "preference": `{"prompt": str, "chosen": str, "rejected": str}`
- "chat-preference": `{"messages": [...the prompt conversation...], "chosen": str, "rejected": str}`
- "unpaired": `{"prompt": str, "completion": str, "label": bool}` (true: a desirable answer)
- "chat-unpaired": `{"messages": [...the prompt conversation...], "completion": str, "label": bool}`
- "prompt-only" / "chat-prompt-only": `{"prompt": str}` / `{"messages": [...]}`, plus `extra` (the
  row's other columns as a JSON object, for reward functions)

A malformed row raises `RowError(reason)`; the caller adds the file and line (or skips the row).
"""

from __future__ import annotations

from typing import Any, Literal

import datasets

from tunelab.choices import Choices
from tunelab.config.schema import DataConfig

Kind = Literal["chat", "prompt-completion", "text", "preference", "chat-preference", "unpaired", "chat-unpaired",
               "prompt-only", "chat-prompt-only"]
ROLES = ("system", "user", "assistant")

_TEXT = datasets.Value("string")
# Explicit output features: Arrow would otherwise infer each batch's type on its own, and a batch
# whose rows were all skipped (empty lists) would get a null type that the next batch cannot match.
FEATURES: dict[str, dict[str, Any]] = {
    "chat": {"messages": [{"role": _TEXT, "content": _TEXT}]},
    "prompt-completion": {"prompt": _TEXT, "completion": _TEXT},
    "text": {"text": _TEXT},
    # Preference pairs (DPO, ORPO, SimPO): a prompt and two answers to it, the preferred one first.
    "preference": {"prompt": _TEXT, "chosen": _TEXT, "rejected": _TEXT},
    "chat-preference": {"messages": [{"role": _TEXT, "content": _TEXT}], "chosen": _TEXT, "rejected": _TEXT},
    # Unpaired feedback (KTO): one answer, labelled desirable or not.
    "unpaired": {"prompt": _TEXT, "completion": _TEXT, "label": datasets.Value("bool")},
    "chat-unpaired": {"messages": [{"role": _TEXT, "content": _TEXT}], "completion": _TEXT,
                      "label": datasets.Value("bool")},
    # Prompts for GRPO; the row's other columns ride along as one JSON object for the rewards.
    "prompt-only": {"prompt": _TEXT, "extra": _TEXT},
    "chat-prompt-only": {"messages": [{"role": _TEXT, "content": _TEXT}], "extra": _TEXT},
}


class RowError(Exception):
    """One row does not fit its record format; `reason` is a short phrase, without file or line."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class RecordFormat:
    """One row layout: which columns it reads, and how a row becomes the canonical layout of `kind`."""

    name: str = ""
    kind: Kind = "chat"
    optional: tuple[str, ...] = ()  # columns read when present
    keeps_other_columns: bool = False  # every column is read (prompt-only rows keep them for rewards)

    def columns(self, cfg: DataConfig) -> list[str]:
        """Columns every row needs (optional columns are read when present)."""
        raise NotImplementedError

    def convert(self, row: dict[str, Any], cfg: DataConfig) -> dict[str, Any]:
        """The canonical row for `row`; raises RowError when `row` is malformed."""
        raise NotImplementedError


RECORDS: Choices[RecordFormat] = Choices("record format")


# --------------------------------------------------------------------------- shared checks


def describe(value: object) -> str:
    """What a non-text value is, for reasons like 'content is a number, not text'."""
    if value is None:
        return "missing"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return f"a {type(value).__name__}"


def text_field(row: dict[str, Any], column: str, *, blank_ok: bool) -> str:
    """`row[column]` as text; RowError when it is not a string (or blank, unless `blank_ok`)."""
    value = row.get(column)
    if value is None:
        raise RowError(f"{column!r} is missing")
    if not isinstance(value, str):
        raise RowError(f"{column!r} is {describe(value)}, not text")
    if not blank_ok and not value.strip():
        raise RowError(f"{column!r} is empty")
    return value


def turn_list(row: dict[str, Any], column: str) -> list[Any]:
    """The list of turns in `row[column]`; RowError when it is missing, not a list, or empty."""
    turns = row.get(column)
    if turns is None:
        raise RowError(f"{column!r} is missing")
    if not isinstance(turns, list):
        raise RowError(f"{column!r} is {describe(turns)}, not a list of messages")
    if not turns:
        raise RowError(f"{column!r} is an empty list")
    return turns


def check_conversation(messages: list[dict[str, str]]) -> list[dict[str, str]]:
    """Rules every conversation obeys after its roles are mapped to system/user/assistant.

    Reasons number messages from 1, as a person counts them in the file.
    """
    for number, message in enumerate(messages, 1):
        if message["role"] == "system" and number != 1:
            raise RowError(f"message {number} is a system message; only the first message may be one")
        if message["role"] == "assistant" and not message["content"].strip():
            raise RowError(f"message {number} is an assistant message with empty content")
    if not any(m["role"] == "assistant" for m in messages):
        raise RowError("no assistant message (nothing to learn from)")
    return messages


def message_text(turn: dict[str, Any], key: str, number: int) -> str:
    """`turn[key]` of message `number` as text; RowError for a missing or non-string value."""
    value = turn.get(key)
    if value is None:
        raise RowError(f"message {number} has no {key!r}")
    if not isinstance(value, str):
        raise RowError(f"message {number} {key!r} is {describe(value)}, not text")
    return value


def parse_messages(turns: list[Any]) -> list[dict[str, str]]:
    """A list of `{"role", "content"}` objects as messages; RowError naming the first bad one."""
    messages = []
    for number, turn in enumerate(turns, 1):
        if not isinstance(turn, dict):
            raise RowError(f"message {number} is {describe(turn)}, not an object with role and content")
        role = turn.get("role")
        if role not in ROLES:
            # Only the three roles every chat template knows; "human", "bot"... would be guesses.
            shown = "no role" if role is None else f"unknown role {role!r}"
            raise RowError(f"message {number} has {shown} (use system, user or assistant)")
        # Other keys ("name", "tool_calls", ...) are dropped: templates read role and content only.
        messages.append({"role": role, "content": message_text(turn, "content", number)})
    return messages
