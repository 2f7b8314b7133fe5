"""Chat records: conversations rendered with the run's chat template.

The conversation is rendered once and tokenized with character offsets. The characters of each
assistant answer are found by rendering the conversation up to that turn twice — with a generation
prompt (the prefix the model sees at inference) and with the answer (the prefix plus answer plus
end-of-turn) — so the trained span is exactly what the model must produce after the prompt
`tunelab chat` renders: the answer and the end-of-turn token.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tunelab.errors import DataError
from tunelab.tasks.lm.render import RENDERERS, Encoded, Renderer

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


class TemplateMismatch(DataError):
    """The chat template renders earlier turns differently once later turns follow."""


@RENDERERS.register("chat")
class ChatRenderer(Renderer):
    kind = "chat"
    uses_template = True

    def render(self, record: dict[str, Any]) -> Encoded:
        return render_chat(with_system(record["messages"], self.lm.system_prompt), self.tokenizer, self.lm.train_on)

    def stop_token(self) -> tuple[str, int] | None:
        assert self.template is not None
        end = self.template.end_of_turn
        return end, int(self.tokenizer.convert_tokens_to_ids(end))

    def heldout_prompt(self, record: dict[str, Any]) -> dict[str, Any]:
        """The conversation up to its last assistant turn, which is the reference."""
        messages = with_system(record["messages"], self.lm.system_prompt)
        last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
        ids = prompt_ids(self.tokenizer, messages[:last])
        return {"messages": messages[:last], "prompt_ids": ids, "reference": messages[last]["content"]}

    def text(self, record: dict[str, Any]) -> str:
        return "\n\n".join(m["content"] for m in record["messages"])

    def encode_prompt(self, item: dict[str, Any]) -> list[int]:
        """`item` holds `messages` (a conversation ending before the wanted answer) or `prompt` (a
        string, asked as a single user turn)."""
        messages = item["messages"] if "messages" in item else [{"role": "user", "content": item["prompt"]}]
        return prompt_ids(self.tokenizer, with_system(messages, self.lm.system_prompt))


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
