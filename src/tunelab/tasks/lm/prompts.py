"""Prompt-only records (GRPO): each sample is the prompt the model answers during training.

The prompt is encoded exactly as inference encodes it — `tokenizer(prompt)` for `prompt-only`
records, the chat template with its generation prompt for `chat-prompt-only` — so the answers
sampled in training are the answers `tunelab chat` and `generate` would give. No token is trained
from the data: the objective (objectives/grpo.py) trains on the answers it samples. A prompt of
`train.max_length` tokens or more leaves no room for an answer and is dropped (`trained` is 1 for
a usable prompt, 0 otherwise, so the usual untrainable-sample accounting applies).
"""

from __future__ import annotations

from typing import Any, ClassVar

from tunelab.tasks.lm.chat import ChatRenderer
from tunelab.tasks.lm.prompt_completion import PromptCompletionRenderer
from tunelab.tasks.lm.render import RENDERERS, Encoded


class PromptSampleRenderer:
    """What both prompt-only renderers share: a sample is a prompt and its reward columns."""

    layout: ClassVar[str] = "prompts"
    label_columns: ClassVar[tuple[str, ...]] = ()  # nothing in the data is trained
    columns: ClassVar[tuple[str, ...]] = ("input_ids", "extra", "trained", "length", "truncated")

    def samples(self, record: dict[str, Any], max_length: int) -> list[dict[str, Any]]:
        ids = self.encode_prompt(self.inference_item(record))  # type: ignore[attr-defined]
        fits = len(ids) < max_length
        return [{"input_ids": ids, "extra": record["extra"], "trained": int(fits), "length": len(ids),
                 "truncated": not fits}]

    def render(self, record: dict[str, Any]) -> Encoded:
        """The prompt alone, nothing trained (what `tunelab data preview` shows)."""
        ids = self.encode_prompt(self.inference_item(record))  # type: ignore[attr-defined]
        return Encoded(ids, [False] * len(ids))

    def heldout_prompt(self, record: dict[str, Any]) -> None:
        return None  # no reference answer: the rewards score what the model writes

    def inference_item(self, record: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError


@RENDERERS.register("prompt-only")
class PromptOnlyRenderer(PromptSampleRenderer, PromptCompletionRenderer):
    kind = "prompt-only"

    def inference_item(self, record: dict[str, Any]) -> dict[str, Any]:
        return {"prompt": record["prompt"]}

    def text(self, record: dict[str, Any]) -> str:
        return record["prompt"]


@RENDERERS.register("chat-prompt-only")
class ChatPromptOnlyRenderer(PromptSampleRenderer, ChatRenderer):
    kind = "chat-prompt-only"

    def inference_item(self, record: dict[str, Any]) -> dict[str, Any]:
        return {"messages": record["messages"]}

    def text(self, record: dict[str, Any]) -> str:
        return "\n\n".join(m["content"] for m in record["messages"])

