"""Chat templates: the model's own, or a named one for models that ship none.

The template chosen for training is written into the tokenizer (`chat_template`) and saved with
the trained model, so `tunelab chat` and `tunelab generate` render prompts exactly as training did.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from tunelab.choices import closest
from tunelab.errors import ConfigError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from tunelab.config.schema import LanguageModelConfig

CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
LLAMA_3 = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim"
    " + '<|eot_id|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)
ALPACA = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ message['content'] + '\\n\\n' }}"
    "{% elif message['role'] == 'user' %}{{ '### Instruction:\\n' + message['content'] + '\\n\\n' }}"
    "{% elif message['role'] == 'assistant' %}{{ '### Response:\\n' + message['content'] + eos_token + '\\n\\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '### Response:\\n' }}{% endif %}"
)


@dataclass(frozen=True)
class NamedTemplate:
    jinja: str
    #: tokens the template writes that must be single (special) tokens; added when the tokenizer lacks them
    special_tokens: tuple[str, ...] = ()


NAMED_TEMPLATES: dict[str, NamedTemplate] = {
    "chatml": NamedTemplate(CHATML, ("<|im_start|>", "<|im_end|>")),
    "llama-3": NamedTemplate(LLAMA_3, ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>")),
    "alpaca": NamedTemplate(ALPACA),
}
PROBE = "tunelab-probe-answer"


@dataclass
class ChatTemplate:
    """The template a run uses, where it came from, and the token that ends an assistant turn."""

    name: str  # "model" (the model's own), a named template, or the .jinja path
    jinja: str
    end_of_turn: str
    added_tokens: list[str] = field(default_factory=list)


def resolve_template(tokenizer: PreTrainedTokenizerBase, cfg: LanguageModelConfig, model_name: str) -> ChatTemplate:
    """Pick the run's template, install it in `tokenizer`, and add the special tokens it needs.

    `lm.add_tokens` are added too. Returns the template with the tokens that were new to the
    tokenizer (the model's embeddings must be resized for them).
    """
    name, jinja, specials = _choose(tokenizer, cfg.template, model_name)
    tokenizer.chat_template = jinja
    wanted = list(dict.fromkeys([*specials, *cfg.add_tokens]))
    vocab = tokenizer.get_vocab()
    added = [t for t in wanted if t not in vocab]
    if added:
        tokenizer.add_tokens(added, special_tokens=True)
    return ChatTemplate(name, jinja, end_of_turn_token(tokenizer), added)


def _choose(tokenizer: PreTrainedTokenizerBase, choice: str, model_name: str) -> tuple[str, str, tuple[str, ...]]:
    if choice == "auto":
        own = tokenizer.chat_template
        if isinstance(own, dict):  # several named templates: the default one is what chat uses
            own = own.get("default")
        if not own:
            raise ConfigError(
                f"lm.template: model {model_name!r} has no chat template of its own",
                fix=f"set lm.template to one of {', '.join(NAMED_TEMPLATES)} or a .jinja file",
            )
        return "model", own, ()
    if choice in NAMED_TEMPLATES:
        named = NAMED_TEMPLATES[choice]
        return choice, named.jinja, named.special_tokens
    if choice.endswith(".jinja"):
        path = Path(choice)
        if not path.is_file():
            raise ConfigError(f"lm.template: {path} does not exist", fix="check the path of the .jinja file")
        return str(path), path.read_text(encoding="utf-8"), ()
    hint = closest(choice, list(NAMED_TEMPLATES))
    raise ConfigError(
        f"lm.template: unknown template {choice!r}",
        fix=f"did you mean {hint!r}?" if hint else f"use auto, {', '.join(NAMED_TEMPLATES)} or a .jinja file",
    )


def end_of_turn_token(tokenizer: PreTrainedTokenizerBase) -> str:
    """The special token the template writes right after an assistant's answer (<|im_end|>,
    <|eot_id|>, </s>, ...); the tokenizer's EOS when the template writes none.

    Found by rendering a probe answer: whatever special token first follows it ends the turn.
    """
    probe = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": PROBE}]
    text = tokenizer.apply_chat_template(probe, tokenize=False)
    tail = text[text.rfind(PROBE) + len(PROBE) :]
    added = [t.content for t in tokenizer.added_tokens_decoder.values() if t.special]
    specials = sorted(set(tokenizer.all_special_tokens) | set(added), key=len, reverse=True)
    best: tuple[int, str] | None = None
    for token in specials:
        at = tail.find(token)
        if at >= 0 and (best is None or at < best[0]):
            best = (at, token)
    if best is not None:
        return best[1]
    if tokenizer.eos_token is None:
        raise ConfigError("the tokenizer has no EOS token and its chat template ends turns with none",
                          fix="set lm.template to chatml or llama-3, which end turns with a special token")
    return tokenizer.eos_token
