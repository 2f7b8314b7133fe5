"""Prompt-completion records: a plain prompt and its completion, no chat template."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tunelab.tasks.lm.render import RENDERERS, Encoded, Renderer, eos_id

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


@RENDERERS.register("prompt-completion")
class PromptCompletionRenderer(Renderer):
    kind = "prompt-completion"

    def render(self, record: dict[str, Any]) -> Encoded:
        return render_prompt_completion(record["prompt"], record["completion"], self.tokenizer, self.lm.train_on)

    def heldout_prompt(self, record: dict[str, Any]) -> dict[str, Any]:
        ids = self.tokenizer(record["prompt"], add_special_tokens=True)["input_ids"]
        return {"prompt": record["prompt"], "prompt_ids": ids, "reference": record["completion"]}

    def text(self, record: dict[str, Any]) -> str:
        return f"{record['prompt']}\n\n{record['completion']}"


def render_prompt_completion(
    prompt: str, completion: str, tokenizer: PreTrainedTokenizerBase, train_on: str
) -> Encoded:
    """Plain prompt + completion + EOS, no template. The two parts are tokenized apart, as at inference
    (where the prompt is tokenized alone and the completion generated)."""
    head = tokenizer(prompt, add_special_tokens=True)["input_ids"]
    tail = [*tokenizer(completion, add_special_tokens=False)["input_ids"], eos_id(tokenizer)]
    train_prompt = train_on == "all"
    return Encoded(head + tail, [train_prompt] * len(head) + [True] * len(tail))
