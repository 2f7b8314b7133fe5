"""Unpaired feedback records (KTO): one answer, labelled desirable or not, rendered as SFT would.

A `unpaired` record renders as prompt + completion + EOS, a `chat-unpaired` one with the chat
template and the completion as the last assistant turn; only the answer's tokens are trained,
whatever `lm.train_on` says (the label is about the answer). The sample carries the label as a
`desirable` column. The objective (objectives/kto.py) adds each sample's mismatched twin — its
prompt with another sample's answer — for KTO's KL estimate, once the data is tokenized.
"""

from __future__ import annotations

from typing import Any, ClassVar

from tunelab.tasks.lm.chat import ChatRenderer, render_chat, with_system
from tunelab.tasks.lm.prompt_completion import PromptCompletionRenderer, render_prompt_completion
from tunelab.tasks.lm.render import RENDERERS, Encoded


class LabelledRenderer:
    """What both unpaired renderers share: the label rides along as the `desirable` column."""

    layout: ClassVar[str] = "labelled"
    columns: ClassVar[tuple[str, ...]] = ("input_ids", "labels", "desirable", "trained", "length", "truncated")

    def samples(self, record: dict[str, Any], max_length: int) -> list[dict[str, Any]]:
        [sample] = super().samples(record, max_length)  # type: ignore[misc]
        return [{**sample, "desirable": bool(record["label"])}]

    def heldout_prompt(self, record: dict[str, Any]) -> dict[str, Any] | None:
        """The prompt with its answer as the reference, for desirable answers only (an undesirable
        one is not what generation should match)."""
        if not record["label"]:
            return None
        return super().heldout_prompt(self.as_sft(record))  # type: ignore[misc]

    def as_sft(self, record: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError


@RENDERERS.register("unpaired")
class UnpairedRenderer(LabelledRenderer, PromptCompletionRenderer):
    kind = "unpaired"

    def render(self, record: dict[str, Any]) -> Encoded:
        return render_prompt_completion(record["prompt"], record["completion"], self.tokenizer, "completion")

    def as_sft(self, record: dict[str, Any]) -> dict[str, Any]:
        return {"prompt": record["prompt"], "completion": record["completion"]}


@RENDERERS.register("chat-unpaired")
class ChatUnpairedRenderer(LabelledRenderer, ChatRenderer):
    kind = "chat-unpaired"

    def render(self, record: dict[str, Any]) -> Encoded:
        messages = [*with_system(record["messages"], self.lm.system_prompt),
                    {"role": "assistant", "content": record["completion"]}]
        return render_chat(messages, self.tokenizer, "last-assistant")

    def as_sft(self, record: dict[str, Any]) -> dict[str, Any]:
        return {"messages": [*record["messages"], {"role": "assistant", "content": record["completion"]}]}

    def text(self, record: dict[str, Any]) -> str:
        return "\n\n".join([*(m["content"] for m in record["messages"]), record["completion"]])
