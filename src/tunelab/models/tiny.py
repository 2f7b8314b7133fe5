"""Tiny random models built in-process: no download, bit-identical on every machine.

They exist for tests, smoke runs and examples: a 2-layer BERT with a character-level WordPiece
tokenizer and a 2-layer Llama with a byte-level tokenizer and a chat template.
"""

from __future__ import annotations

import hashlib
import string
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tunelab.models.cache import build_atomically, models_dir

if TYPE_CHECKING:
    import torch

TINY_BERT_NAME = "tiny-random-bert"
TINY_LLAMA_NAME = "tiny-random-llama"
# Bump when a builder changes what it writes, so old caches are not reused.
TINY_BERT_VERSION = "v1"
TINY_LLAMA_VERSION = "v1"
SEED = 1234
MAX_POSITIONS = 512

BERT_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
LLAMA_SPECIALS = ["<pad>", "<s>", "</s>"]
LLAMA_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|{{ message['role'] }}|>\n{{ message['content'] }}</s>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def seeded_init(model: torch.nn.Module, seed: int = SEED) -> None:
    """Overwrite every parameter from a generator seeded by (seed, parameter name).

    Independent of transformers' own init code and of parameter order, so the bytes only depend on
    the shapes and torch's CPU normal sampler.
    """
    import torch

    with torch.no_grad():
        for name, param in sorted(model.named_parameters()):
            name_seed = int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "little")
            gen = torch.Generator().manual_seed(seed * 2**32 + name_seed)
            if name.endswith("bias"):
                param.zero_()
            elif param.dim() == 1:  # norm scales
                param.fill_(1.0)
            else:
                param.copy_(torch.randn(param.shape, generator=gen, dtype=torch.float32) * 0.02)


def bert_vocab() -> list[str]:
    """Specials, then lower-case printable ASCII characters and their `##` continuations."""
    chars = [c for c in string.printable if not c.isspace() and not c.isupper()]
    return BERT_SPECIALS + chars + [f"##{c}" for c in chars]


def build_bert_tokenizer():  # -> transformers.PreTrainedTokenizerBase
    """A character-level WordPiece tokenizer that adds [CLS] … [SEP] like BERT."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import BertTokenizerFast

    vocab = {token: i for i, token in enumerate(bert_vocab())}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True, strip_accents=True, clean_text=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    cls_id, sep_id = vocab["[CLS]"], vocab["[SEP]"]
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    tok.decoder = decoders.WordPiece(prefix="##")
    return BertTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=MAX_POSITIONS,
    )


def byte_alphabet() -> list[str]:
    """GPT-2's printable spelling of bytes 0..255 (the byte-level BPE alphabet), in byte order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    spelling: dict[int, str] = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in spelling:
            spelling[b] = chr(256 + extra)
            extra += 1
    return [spelling[b] for b in range(256)]


def llama_vocab() -> list[str]:
    """Specials, then the 256 single bytes in the byte-level alphabet."""
    return LLAMA_SPECIALS + byte_alphabet()


def build_llama_tokenizer():  # -> transformers.PreTrainedTokenizerBase
    """A byte-level BPE tokenizer without merges: every byte is one token, `<s>` is prepended."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(llama_vocab())}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.add_special_tokens(LLAMA_SPECIALS)
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", vocab["<s>"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        model_max_length=MAX_POSITIONS,
        chat_template=LLAMA_CHAT_TEMPLATE,
    )


def _build_bert(folder: Path) -> None:
    from transformers import BertConfig, BertModel

    tokenizer = build_bert_tokenizer()
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=MAX_POSITIONS,
        pad_token_id=tokenizer.pad_token_id,
    )
    save_seeded(BertModel, config, tokenizer, folder)


def _build_llama(folder: Path) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = build_llama_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=64,
        max_position_embeddings=MAX_POSITIONS,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    save_seeded(LlamaForCausalLM, config, tokenizer, folder)


def save_seeded(model_class: Any, config: Any, tokenizer: Any, folder: Path) -> None:
    """Instantiate, give every weight its seeded value, and save model and tokenizer to `folder`."""
    import torch

    with torch.random.fork_rng(devices=[]):  # building must not shift the caller's RNG stream
        model = model_class(config)
    seeded_init(model)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def tiny_bert_folder() -> Path:
    """The cached tiny BERT folder, built on first use."""
    return build_atomically(models_dir() / f"{TINY_BERT_NAME}-{TINY_BERT_VERSION}", _build_bert)


def tiny_llama_folder() -> Path:
    """The cached tiny Llama folder, built on first use."""
    return build_atomically(models_dir() / f"{TINY_LLAMA_NAME}-{TINY_LLAMA_VERSION}", _build_llama)
