"""Preference records: one prompt and two answers, rendered as two sequences that share the prompt.

Each answer is rendered as training would render it alone — plain prompt + answer + EOS for
`preference` records, the chat template with the answer as the last assistant turn for
`chat-preference` — and only the answer's tokens (with its end token) are trained. A pair is one
sample: the objective (objectives/preference.py) scores both sequences in one forward pass.
A sequence longer than train.max_length is cut; a prompt that fills it leaves nothing to compare,
and the pair is dropped like any sample with no trained token.
"""

from __future__ import annotations

from typing import Any, ClassVar

from tunelab.tasks.lm.chat import ChatRenderer, render_chat, with_system
from tunelab.tasks.lm.prompt_completion import PromptCompletionRenderer, render_prompt_completion
from tunelab.tasks.lm.render import RENDERERS, Encoded, sample_columns

SIDES = ("chosen", "rejected")


class PairRenderer:
    """What both preference renderers share: a pair becomes the columns of its two sequences."""

    layout: ClassVar[str] = "pairs"
    label_columns: ClassVar[tuple[str, ...]] = ("chosen_labels", "rejected_labels")
    columns: ClassVar[tuple[str, ...]] = (
        "chosen_input_ids", "chosen_labels", "rejected_input_ids", "rejected_labels", "trained", "length",
        "truncated",
    )

    def render_answer(self, record: dict[str, Any], answer: str) -> Encoded:
        raise NotImplementedError

    def render(self, record: dict[str, Any]) -> Encoded:
        """The chosen sequence alone (what `tunelab data preview` and overlap checks read first)."""
        return self.render_answer(record, record["chosen"])

    def samples(self, record: dict[str, Any], max_length: int) -> list[dict[str, Any]]:
        out: dict[str, Any] = {}
        trained, length, cut = [], [], False
        for side in SIDES:
            encoded = self.render_answer(record, record[side])
            [piece], piece_cut = self.pieces(encoded, max_length)  # type: ignore[attr-defined]
            columns = sample_columns(piece, piece_cut)
            out[f"{side}_input_ids"], out[f"{side}_labels"] = columns["input_ids"], columns["labels"]
            trained.append(columns["trained"])
            length.append(columns["length"])
            cut = cut or piece_cut
        # A pair is trainable only when both answers keep a trained token; batches sort by the longer one.
        return [{**out, "trained": min(trained), "length": max(length), "truncated": cut}]

    def heldout_prompt(self, record: dict[str, Any]) -> dict[str, Any]:
        """The prompt, with the chosen answer as the reference for generation metrics."""
        return super().heldout_prompt(self.as_sft(record))  # type: ignore[misc]

    def as_sft(self, record: dict[str, Any]) -> dict[str, Any]:
        """The record as the SFT record its chosen answer would be."""
        raise NotImplementedError


@RENDERERS.register("preference")
class PreferenceRenderer(PairRenderer, PromptCompletionRenderer):
    kind = "preference"

    def render_answer(self, record: dict[str, Any], answer: str) -> Encoded:
        return render_prompt_completion(record["prompt"], answer, self.tokenizer, "completion")

    def as_sft(self, record: dict[str, Any]) -> dict[str, Any]:
        return {"prompt": record["prompt"], "completion": record["chosen"]}

    def text(self, record: dict[str, Any]) -> str:
        return f"{record['prompt']}\n\n{record['chosen']}\n\n{record['rejected']}"


@RENDERERS.register("chat-preference")
class ChatPreferenceRenderer(PairRenderer, ChatRenderer):
    kind = "chat-preference"

    def render_answer(self, record: dict[str, Any], answer: str) -> Encoded:
        messages = [*with_system(record["messages"], self.lm.system_prompt), {"role": "assistant", "content": answer}]
        return render_chat(messages, self.tokenizer, "last-assistant")

    def as_sft(self, record: dict[str, Any]) -> dict[str, Any]:
        return {"messages": [*record["messages"], {"role": "assistant", "content": record["chosen"]}]}

    def text(self, record: dict[str, Any]) -> str:
        return "\n\n".join([*(m["content"] for m in record["messages"]), record["chosen"], record["rejected"]])
