"""Turning normalized records into token ids with a per-token "trained" flag (the loss mask).

Chat samples are rendered with the run's chat template, then tokenized once with character offsets.
The characters of each assistant answer are found by rendering the conversation up to that turn
twice — with a generation prompt (the prefix the model sees at inference) and with the answer
(the prefix plus answer plus end-of-turn) — so the trained span is exactly what the model must
produce after the prompt `tunelab chat` renders: the answer and the end-of-turn token.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tunelab.errors import DataError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

IGNORE = -100  # label of tokens that carry no loss (the value torch's cross_entropy ignores)


@dataclass
class Encoded:
    input_ids: list[int]
    trained: list[bool]  # token j is a target: the loss includes predicting it from tokens < j


class TemplateMismatch(DataError):
    """The chat template renders earlier turns differently once later turns follow."""


def apply_template(tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, str]], *, prompt: bool) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=prompt)


def with_system(messages: list[dict[str, str]], system_prompt: str | None) -> list[dict[str, str]]:
    """Prepend `system_prompt` to a conversation that has no system message."""
    if system_prompt is None or (messages and messages[0]["role"] == "system"):
        return messages
    return [{"role": "system", "content": system_prompt}, *messages]


def render_chat(messages: list[dict[str, str]], tokenizer: PreTrainedTokenizerBase, train_on: str) -> Encoded:
    text = apply_template(tokenizer, messages, prompt=False)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    if train_on == "all":
        return Encoded(enc["input_ids"], [True] * len(enc["input_ids"]))
    answers = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    if train_on == "last-assistant":
        answers = answers[-1:]
    spans = [_answer_span(tokenizer, messages, i, text) for i in answers]
    trained = [any(start <= s < end for start, end in spans) for s, _ in enc["offset_mapping"]]
    return Encoded(enc["input_ids"], trained)


def _answer_span(tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, str]], i: int, text: str) -> tuple[int, int]:
    prefix = apply_template(tokenizer, messages[:i], prompt=True)
    upto = apply_template(tokenizer, messages[: i + 1], prompt=False)
    if not upto.startswith(prefix) or not text.startswith(upto):
        raise TemplateMismatch(
            f"the chat template renders turn {i + 1} differently once later turns follow, so its answer "
            "cannot be located",
            fix="set lm.train_on: last-assistant, or use a template that renders turns incrementally",
        )
    return len(prefix), len(upto)


def prompt_ids(tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, str]]) -> list[int]:
    """Token ids of the prompt that asks the model for the next assistant turn (what chat renders)."""
    text = apply_template(tokenizer, messages, prompt=True)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def render_prompt_completion(
    prompt: str, completion: str, tokenizer: PreTrainedTokenizerBase, train_on: str
) -> Encoded:
    """Plain prompt + completion + EOS, no template. The two parts are tokenized apart, as at inference
    (where the prompt is tokenized alone and the completion generated)."""
    head = tokenizer(prompt, add_special_tokens=True)["input_ids"]
    tail = [*tokenizer(completion, add_special_tokens=False)["input_ids"], _eos_id(tokenizer)]
    train_prompt = train_on == "all"
    return Encoded(head + tail, [train_prompt] * len(head) + [True] * len(tail))


def render_text(text: str, tokenizer: PreTrainedTokenizerBase) -> Encoded:
    """A raw document followed by EOS; every token is trained (continued pretraining)."""
    ids = [*tokenizer(text, add_special_tokens=True)["input_ids"], _eos_id(tokenizer)]
    return Encoded(ids, [True] * len(ids))


def _eos_id(tokenizer: PreTrainedTokenizerBase) -> int:
    if tokenizer.eos_token_id is None:
        raise DataError("the tokenizer has no EOS token, so samples cannot be ended",
                        fix="use a model whose tokenizer defines eos_token")
    return int(tokenizer.eos_token_id)


def to_labels(encoded: Encoded) -> list[int]:
    """Targets in input order: the id where trained, IGNORE elsewhere. Position 0 is never predicted
    (nothing precedes it), so it is IGNORE too; packing relies on that at every sample boundary."""
    labels = [t if keep else IGNORE for t, keep in zip(encoded.input_ids, encoded.trained, strict=True)]
    if labels:
        labels[0] = IGNORE
    return labels


def chunks(encoded: Encoded, size: int) -> list[Encoded]:
    """Split a long document into blocks of at most `size` tokens (raw-text domain adaptation)."""
    return [
        Encoded(encoded.input_ids[i : i + size], encoded.trained[i : i + size])
        for i in range(0, len(encoded.input_ids), size)
    ]


def record_summary(record: dict[str, Any]) -> str:
    """A short description of a record for messages (first characters of its first text)."""
    for key in ("messages", "prompt", "text"):
        value = record.get(key)
        if isinstance(value, list) and value:
            value = value[0].get("content", "")
        if isinstance(value, str):
            return value[:60].replace("\n", " ")
    return "?"
