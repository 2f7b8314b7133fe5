"""Turning normalized records into token ids with a per-token "trained" flag (the loss mask).

Each kind of causal-lm record (data/records: chat, prompt-completion, text) has one `Renderer`
here, in its own module (tasks/lm/chat.py, prompt_completion.py, text.py), registered in
`RENDERERS`. A renderer answers everything that differs between the kinds — how a record becomes
trained tokens, whether a long one is truncated or cut into blocks, which token must be trained so
the model learns to stop, what prompt asks for a held-out answer, and how an inference prompt is
encoded — so `CausalLM` never asks which kind it holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from tunelab.choices import Choices
from tunelab.errors import DataError
from tunelab.objectives.base import IGNORE

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from tunelab.config.schema import LanguageModelConfig
    from tunelab.models.templates import ChatTemplate


@dataclass
class Encoded:
    input_ids: list[int]
    trained: list[bool]  # token j is a target: the loss includes predicting it from tokens < j


class Renderer:
    """One kind of normalized record, as training and inference see it."""

    kind: ClassVar[str] = ""
    uses_template: ClassVar[bool] = False  # rendered with the run's chat template
    #: what one tokenized sample holds: "sequences" (one sequence and its labels) or "pairs" (a chosen
    #: and a rejected sequence; `Objective.layout` must match)
    layout: ClassVar[str] = "sequences"
    #: the label columns of a tokenized sample (the pre-flight looks for the stop token in them)
    label_columns: ClassVar[tuple[str, ...]] = ("labels",)
    #: the dataset columns `samples` fills
    columns: ClassVar[tuple[str, ...]] = ("input_ids", "labels", "trained", "length", "truncated")

    def __init__(
        self, tokenizer: PreTrainedTokenizerBase, template: ChatTemplate | None, lm: LanguageModelConfig
    ) -> None:
        self.tokenizer = tokenizer
        self.template = template
        self.lm = lm

    def render(self, record: dict[str, Any]) -> Encoded:
        """One normalized record as token ids with its loss mask (what training sees)."""
        raise NotImplementedError

    def pieces(self, encoded: Encoded, max_length: int) -> tuple[list[Encoded], bool]:
        """The samples of one rendered record and whether it was cut: one sample, truncated to
        `max_length` (a prompt and its answer only make sense together)."""
        cut = len(encoded.input_ids) > max_length
        return [Encoded(encoded.input_ids[:max_length], encoded.trained[:max_length])], cut

    def samples(self, record: dict[str, Any], max_length: int) -> list[dict[str, Any]]:
        """The tokenized samples of one record, as dataset columns: input ids, labels, how many tokens
        are trained, the length batching sorts by, and whether the record was cut."""
        pieces, cut = self.pieces(self.render(record), max_length)
        return [sample_columns(piece, cut) for piece in pieces]

    def stop_token(self) -> tuple[str, int] | None:
        """The token that ends an answer, which training must teach so the model learns to stop;
        None when records have no answer to end."""
        return self.tokenizer.eos_token, eos_id(self.tokenizer)

    def heldout_prompt(self, record: dict[str, Any]) -> dict[str, Any] | None:
        """The prompt and reference answer a held-out record gives for generation metrics; None
        when the record asks no question."""
        return None

    def text(self, record: dict[str, Any]) -> str:
        """The record's text, paragraphs kept (for overlap checks against general text)."""
        raise NotImplementedError

    def encode_prompt(self, item: dict[str, Any]) -> list[int]:
        """Token ids of one inference prompt (`item["prompt"]`, a string), rendered as training did."""
        if "messages" in item:
            raise DataError("this run was not trained on conversations, so it takes 'prompt', not 'messages'",
                            fix="give each input a 'prompt' string")
        return self.tokenizer(item["prompt"], add_special_tokens=True)["input_ids"]


RENDERERS: Choices[type[Renderer]] = Choices("causal-lm record kind")


def renderer_for(
    kind: str, tokenizer: PreTrainedTokenizerBase, template: ChatTemplate | None, lm: LanguageModelConfig
) -> Renderer:
    return RENDERERS.get(kind)(tokenizer, template, lm)


def eos_id(tokenizer: PreTrainedTokenizerBase) -> int:
    if tokenizer.eos_token_id is None:
        raise DataError("the tokenizer has no EOS token, so samples cannot be ended",
                        fix="use a model whose tokenizer defines eos_token")
    return int(tokenizer.eos_token_id)


def sample_columns(piece: Encoded, cut: bool) -> dict[str, Any]:
    labels = to_labels(piece)
    return {"input_ids": piece.input_ids, "labels": labels, "trained": sum(1 for t in labels if t != IGNORE),
            "length": len(piece.input_ids), "truncated": cut}


def to_labels(encoded: Encoded) -> list[int]:
    """Targets in input order: the id where trained, IGNORE elsewhere. Position 0 is never predicted
    (nothing precedes it), so it is IGNORE too; packing relies on that at every sample boundary."""
    labels = [t if keep else IGNORE for t, keep in zip(encoded.input_ids, encoded.trained, strict=True)]
    if labels:
        labels[0] = IGNORE
    return labels
