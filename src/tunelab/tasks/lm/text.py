"""Raw-text records: documents for domain adaptation (continued pretraining), every token trained."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tunelab.tasks.lm.render import RENDERERS, Encoded, Renderer, eos_id

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


@RENDERERS.register("text")
class TextRenderer(Renderer):
    kind = "text"

    def render(self, record: dict[str, Any]) -> Encoded:
        return render_text(record["text"], self.tokenizer)

    def pieces(self, encoded: Encoded, max_length: int) -> tuple[list[Encoded], bool]:
        """A long document is cut into blocks, none of it thrown away: nothing is truncated."""
        return chunks(encoded, max_length), False

    def stop_token(self) -> tuple[str, int] | None:
        return None  # a document has no answer to end

    def text(self, record: dict[str, Any]) -> str:
        return record.get("text") or ""


def render_text(text: str, tokenizer: PreTrainedTokenizerBase) -> Encoded:
    """A raw document followed by EOS; every token is trained (continued pretraining)."""
    ids = [*tokenizer(text, add_special_tokens=True)["input_ids"], eos_id(tokenizer)]
    return Encoded(ids, [True] * len(ids))


def chunks(encoded: Encoded, size: int) -> list[Encoded]:
    """Split a long document into blocks of at most `size` tokens (raw-text domain adaptation)."""
    return [
        Encoded(encoded.input_ids[i : i + size], encoded.trained[i : i + size])
        for i in range(0, len(encoded.input_ids), size)
    ]
