"""Write a Llama-family Hugging Face folder as an F32 or F16 GGUF file for llama.cpp.

This follows what llama.cpp's `convert_hf_to_gguf.py` does for `LlamaModel` (which also converts
`MistralForCausalLM`), written with the `gguf` package alone:

- metadata: `TextModel.set_gguf_parameters` plus `LlamaModel.set_gguf_parameters` (vocab size,
  rope dimension count), `general.file_type` ALL_F32 / MOSTLY_F16;
- tensors: renamed to llama.cpp's names (`token_embd`, `blk.N.attn_q`, ..., `output_norm`, `output`),
  Q and K rows permuted per head the way `LlamaModel.permute` does for llama.cpp's RoPE (loaders
  such as transformers' GGUF reader undo it); 1-D tensors (the norms) stay F32 in an F16 file;
  with tied embeddings there is no `output` tensor and llama.cpp reuses `token_embd`;
- tokenizer: `_set_vocab_gpt2` for byte-level BPE tokenizers (`tokenizer.ggml.model = "gpt2"`),
  token types from the added tokens, merges, special ids, add_bos/add_eos and the chat template.

Where llama.cpp would pick the pre-tokenizer name by hashing the encoding of a test string against
a table of known checkpoints, this reads the pre-tokenizer's structure from tokenizer.json, so
fine-tuned and custom tokenizers get a name whose regex llama.cpp applies identically.

Anything a Llama GGUF cannot represent (other architectures, RoPE scaling, biases, sliding-window
attention, SentencePiece tokenizers, unknown pre-tokenizers) is refused with `ExportError` before any
file is created. The file is written to a hidden temporary sibling and renamed into place.
"""

from __future__ import annotations

import json
import os
import uuid
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from tunelab.errors import ExportError

SUPPORTED_GGUF_ARCHITECTURES: tuple[str, ...] = ("LlamaForCausalLM", "MistralForCausalLM")
GGUF_ARCHITECTURE = "llama"

_MODEL_TYPES = {"LlamaForCausalLM": "llama", "MistralForCausalLM": "mistral"}
_DTYPES = ("f16", "f32")
_F16_MAX = 65504.0
_SUPPORTED_PRE_TOKENIZERS = (
    "ByteLevel with the GPT-2 regex (gpt-2), Digits + ByteLevel (smollm), Llama-3 Split + ByteLevel (llama-bpe)"
)

# Hugging Face tensor name inside `model.layers.N.` -> (gguf MODEL_TENSOR member, which heads to permute by)
_LAYER_TENSORS: dict[str, tuple[str, str | None]] = {
    "input_layernorm.weight": ("ATTN_NORM", None),
    "self_attn.q_proj.weight": ("ATTN_Q", "q"),
    "self_attn.k_proj.weight": ("ATTN_K", "k"),
    "self_attn.v_proj.weight": ("ATTN_V", None),
    "self_attn.o_proj.weight": ("ATTN_OUT", None),
    "post_attention_layernorm.weight": ("FFN_NORM", None),
    "mlp.gate_proj.weight": ("FFN_GATE", None),
    "mlp.up_proj.weight": ("FFN_UP", None),
    "mlp.down_proj.weight": ("FFN_DOWN", None),
}
# Buffers some older checkpoints saved; llama.cpp skips them too.
_SKIPPED_SUFFIXES = (".rotary_emb.inv_freq",)

# The pre-tokenizer regex of Llama 3's tokenizer.json, which llama.cpp calls "llama-bpe".
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


@dataclass(frozen=True)
class _Hparams:
    """What the GGUF metadata says about the network, read from config.json."""

    context_length: int
    hidden_size: int
    block_count: int
    feed_forward_length: int
    head_count: int
    head_count_kv: int
    head_dim: int
    rope_theta: float
    rms_norm_eps: float
    vocab_size: int
    tie_word_embeddings: bool


@dataclass(frozen=True)
class _Vocab:
    """The tokenizer as llama.cpp's gpt2 tokenizer model stores it."""

    pre: str
    tokens: list[str]
    token_types: list[int]
    merges: list[str]
    special_ids: dict[str, int]  # "bos" | "eos" | "unk" | "pad" -> id
    add_bos: bool
    add_eos: bool
    chat_template: str | list[dict[str, str]] | None


@dataclass(frozen=True)
class _Tensor:
    """One tensor to write: where it comes from, its GGUF name, shape and dtype."""

    gguf_name: str
    hf_name: str
    file: Path
    shape: tuple[int, ...]
    f16: bool
    permute_heads: int | None  # permute rows for RoPE with this many heads, or not at all


def write_gguf(
    model_dir: Path, out_file: Path, dtype: Literal["f16", "f32"] = "f16", *, name: str | None = None
) -> dict[str, Any]:
    """Write model_dir as a GGUF file; return a summary {"file", "dtype", "tensors", "bytes", "architecture"}.

    `model_dir` is a Hugging Face folder (config.json, safetensors weights, tokenizer.json) of one of
    `SUPPORTED_GGUF_ARCHITECTURES`. 2-D weights are stored in `dtype`, norms always in F32.
    `name` becomes `general.name` (default: the output file's stem). "architecture" in the summary is
    the GGUF architecture ("llama"); "source_architecture" is the Hugging Face class exported.
    Raises `ExportError` for anything the file could not represent faithfully; no file is left behind.
    """
    model_dir, out_file = Path(model_dir), Path(out_file)
    if dtype not in _DTYPES:
        raise ExportError(f"unknown GGUF dtype {dtype!r}", fix=f"use one of {', '.join(_DTYPES)}")
    if out_file.is_dir():
        raise ExportError(f"GGUF output {out_file} is a folder", fix="give a file path ending in .gguf")

    hf_arch, config = _load_config(model_dir)
    hparams = _check_and_read_hparams(model_dir, hf_arch, config)
    vocab = _read_vocab(model_dir, hparams.vocab_size)
    tensors = _plan_tensors(model_dir, hparams, f16=dtype == "f16")

    out_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_file.parent / f".{out_file.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.partial"
    try:
        _write(tmp, _general_name(name or out_file.stem), hparams, vocab, tensors, f16=dtype == "f16")
        os.replace(tmp, out_file)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return {
        "file": str(out_file),
        "dtype": dtype,
        "tensors": len(tensors),
        "bytes": out_file.stat().st_size,
        "architecture": GGUF_ARCHITECTURE,
        "source_architecture": hf_arch,
    }


def _general_name(name: str) -> str:
    """`general.name`, avoiding the one value transformers' GGUF reader mistakes for an architecture.

    transformers (5.x) reads a llama file whose general.name is exactly "mistral" as model_type
    "mistral", then fails to map its tensors (gguf-py has no "mistral" architecture).
    """
    return f"{name}-model" if name == "mistral" else name


# --- config ------------------------------------------------------------------------------------


def _load_config(model_dir: Path) -> tuple[str, Any]:
    """`(architecture, transformers config)`, refusing anything but the supported architectures."""
    config_file = model_dir / "config.json"
    if not config_file.is_file():
        raise ExportError(f"{model_dir} has no config.json", fix="export a Hugging Face model folder")
    try:
        raw = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ExportError(f"cannot read {config_file}: {err}") from None
    architectures = raw.get("architectures") or []
    arch = architectures[0] if len(architectures) == 1 else ", ".join(architectures) or "unknown"
    if arch not in SUPPORTED_GGUF_ARCHITECTURES:
        raise ExportError(
            f"cannot export architecture {arch} (model_type {raw.get('model_type')!r}) to GGUF; "
            f"supported: {', '.join(SUPPORTED_GGUF_ARCHITECTURES)}"
        )
    if raw.get("model_type") != _MODEL_TYPES[arch]:
        raise ExportError(
            f"{config_file} says architecture {arch} but model_type {raw.get('model_type')!r}",
            fix=f"a {arch} folder has model_type {_MODEL_TYPES[arch]!r}",
        )
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(str(model_dir), trust_remote_code=False)
    except (OSError, ValueError, KeyError, TypeError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ExportError(f"cannot read {config_file}: {first_line}") from None
    return arch, config


def _check_and_read_hparams(model_dir: Path, arch: str, config: Any) -> _Hparams:
    """The metadata values, after refusing every setting a llama GGUF would silently drop."""

    def refuse(what: str) -> ExportError:
        return ExportError(
            f"cannot export {model_dir.name} ({arch}) to GGUF: {what}",
            fix="only plain Llama/Mistral settings are supported (no RoPE scaling, biases or sliding window)",
        )

    if getattr(config, "quantization_config", None):
        raise refuse("the weights are quantized (quantization_config); export the unquantized model")
    if getattr(config, "hidden_act", "silu") != "silu":
        raise refuse(f"hidden_act {config.hidden_act!r} (llama.cpp's llama uses silu)")
    if getattr(config, "attention_bias", False):
        raise refuse("attention_bias=true (a llama GGUF loaded by transformers would drop the biases)")
    if getattr(config, "mlp_bias", False):
        raise refuse("mlp_bias=true (llama.cpp's llama has no MLP biases)")
    max_positions = int(config.max_position_embeddings)
    sliding_window = getattr(config, "sliding_window", None)
    if sliding_window is not None and int(sliding_window) < max_positions:
        raise refuse(f"sliding-window attention ({sliding_window} < {max_positions} positions)")

    rope = dict(getattr(config, "rope_parameters", None) or {})
    if any(isinstance(value, dict) for value in rope.values()):
        raise refuse(f"per-layer-type RoPE parameters {sorted(rope)}")
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type != "default":
        raise refuse(f"RoPE scaling type {rope_type!r}")
    partial = rope.get("partial_rotary_factor", getattr(config, "partial_rotary_factor", None))
    if partial not in (None, 1, 1.0):
        raise refuse(f"partial_rotary_factor {partial}")
    rope_theta = rope.get("rope_theta", getattr(config, "rope_theta", None))
    if rope_theta is None:
        raise refuse("config.json states no rope_theta")

    heads = int(config.num_attention_heads)
    kv_heads = int(getattr(config, "num_key_value_heads", None) or heads)
    hidden = int(config.hidden_size)
    head_dim = int(getattr(config, "head_dim", None) or hidden // heads)
    if heads % kv_heads or head_dim % 2:
        raise refuse(f"{heads} heads, {kv_heads} key/value heads and head_dim {head_dim} do not fit RoPE")
    return _Hparams(
        context_length=max_positions,
        hidden_size=hidden,
        block_count=int(config.num_hidden_layers),
        feed_forward_length=int(config.intermediate_size),
        head_count=heads,
        head_count_kv=kv_heads,
        head_dim=head_dim,
        rope_theta=float(rope_theta),
        rms_norm_eps=float(config.rms_norm_eps),
        vocab_size=int(config.vocab_size),
        tie_word_embeddings=bool(getattr(config, "tie_word_embeddings", False)),
    )


# --- tokenizer ---------------------------------------------------------------------------------


def _read_vocab(model_dir: Path, vocab_size: int) -> _Vocab:
    """The tokenizer as `_set_vocab_gpt2` writes it, refusing tokenizers llama.cpp would not reproduce."""
    tok_json = _read_tokenizer_json(model_dir)
    pre = _pre_tokenizer_name(model_dir, tok_json)

    import gguf
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(model_dir), trust_remote_code=False)
    except (OSError, ValueError, KeyError, TypeError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ExportError(f"cannot load the tokenizer of {model_dir}: {first_line}") from None

    vocab = tokenizer.get_vocab()
    if max(vocab.values()) >= vocab_size:
        raise ExportError(
            f"the tokenizer of {model_dir} has token id {max(vocab.values())} but the model only "
            f"{vocab_size} embeddings",
            fix="resize the token embeddings to the tokenizer before exporting",
        )
    by_id = {token_id: token for token, token_id in vocab.items()}
    added = tokenizer.added_tokens_decoder  # id -> AddedToken

    # get_vocab_base: normal tokens as spelled in the byte alphabet, added ones as their text.
    tokens: list[str] = []
    types: list[int] = []
    for token_id in range(vocab_size):
        token = by_id.get(token_id)
        if token is None:
            tokens.append(f"[PAD{token_id}]")
            types.append(int(gguf.TokenType.UNUSED))
        elif token_id in added:
            if not added[token_id].normalized:  # llama.cpp expects added tokens pre-normalized
                token = tokenizer.decode(tokenizer.encode(token, add_special_tokens=False))
            special = added[token_id].special or _looks_special(token)
            tokens.append(token)
            types.append(int(gguf.TokenType.CONTROL if special else gguf.TokenType.USER_DEFINED))
        else:
            tokens.append(token)
            types.append(int(gguf.TokenType.NORMAL))

    special_ids = {}
    for kind in ("bos", "eos", "unk", "pad"):
        token_id = getattr(tokenizer, f"{kind}_token_id", None)
        if isinstance(token_id, int) and 0 <= token_id < vocab_size:
            special_ids[kind] = token_id
    add_bos, add_eos = _added_specials(model_dir, tokenizer, special_ids)

    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):
        template = [{"name": key, "template": value} for key, value in template.items()]
    return _Vocab(
        pre=pre,
        tokens=tokens,
        token_types=types,
        merges=_merges(tok_json),
        special_ids=special_ids,
        add_bos=add_bos,
        add_eos=add_eos,
        chat_template=template or None,
    )


def _read_tokenizer_json(model_dir: Path) -> dict[str, Any]:
    """tokenizer.json, which must describe a byte-level BPE model (llama.cpp's "gpt2" tokenizer)."""
    path = model_dir / "tokenizer.json"
    if not path.is_file():
        if (model_dir / "tokenizer.model").is_file():
            raise ExportError(
                f"cannot export the SentencePiece tokenizer (tokenizer.model) of {model_dir} to GGUF",
                fix="only byte-level BPE tokenizers (tokenizer.json) are supported",
            )
        raise ExportError(f"{model_dir} has no tokenizer.json", fix="save the tokenizer next to the model")
    try:
        tok_json = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ExportError(f"cannot read {path}: {err}") from None
    model = tok_json.get("model") or {}
    decoder = tok_json.get("decoder") or {}
    byte_level = (
        model.get("type") == "BPE"
        and not model.get("byte_fallback", False)
        and not model.get("continuing_subword_prefix")
        and not model.get("end_of_word_suffix")
        and decoder.get("type") == "ByteLevel"
    )
    if not byte_level:
        kind = f"{model.get('type')} model with a {decoder.get('type')} decoder"
        if model.get("byte_fallback") or decoder.get("type") in ("Sequence", "Metaspace"):
            kind += " (a SentencePiece-style tokenizer)"
        raise ExportError(
            f"cannot export the tokenizer of {model_dir} to GGUF: it is a {kind}",
            fix="only byte-level BPE tokenizers (GPT-2 / Llama-3 / SmolLM style) are supported",
        )
    if tok_json.get("normalizer") is not None:
        raise ExportError(
            f"cannot export the tokenizer of {model_dir} to GGUF: it has a "
            f"{tok_json['normalizer'].get('type')} normalizer, which llama.cpp's BPE tokenizer does not apply",
        )
    return tok_json


def _byte_level_step(step: dict[str, Any], *, use_regex: bool) -> bool:
    return (
        step.get("type") == "ByteLevel"
        and not step.get("add_prefix_space", False)
        and bool(step.get("use_regex", True)) == use_regex
    )


def _pre_tokenizer_name(model_dir: Path, tok_json: dict[str, Any]) -> str:
    """The `tokenizer.ggml.pre` whose regex llama.cpp applies exactly as this pre-tokenizer splits."""
    pre = tok_json.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre]
    ignore_merges = bool(tok_json["model"].get("ignore_merges", False))
    if len(steps) == 1 and _byte_level_step(steps[0], use_regex=True) and not ignore_merges:
        return "gpt-2"
    if len(steps) == 2 and _byte_level_step(steps[1], use_regex=True) and not ignore_merges:
        first = steps[0]
        if first.get("type") == "Digits" and first.get("individual_digits"):
            return "smollm"
    if len(steps) == 2 and _byte_level_step(steps[1], use_regex=False) and ignore_merges:
        first = steps[0]
        if (
            first.get("type") == "Split"
            and first.get("pattern") == {"Regex": _LLAMA3_SPLIT}
            and first.get("behavior") == "Isolated"
            and not first.get("invert", False)
        ):
            return "llama-bpe"
    described = json.dumps(pre, ensure_ascii=False)
    if len(described) > 160:
        described = described[:157] + "..."
    raise ExportError(
        f"cannot export the tokenizer of {model_dir} to GGUF: llama.cpp has no pre-tokenizer matching {described}",
        fix=f"supported: {_SUPPORTED_PRE_TOKENIZERS}",
    )


def _looks_special(token: str) -> bool:
    """llama.cpp's `does_token_look_special`: added tokens that ought to be control tokens."""
    return (
        token in ("<pad>", "<mask>", "<2mass>", "[@BOS@]")
        or (token.startswith("<|") and token.endswith("|>"))
        or (token.startswith("<｜") and token.endswith("｜>"))
        or (token.startswith("<unused") and token.endswith(">"))
    )


def _merges(tok_json: dict[str, Any]) -> list[str]:
    """BPE merges as "left right" strings; pairs (transformers >= 4.45) are joined like gguf's SpecialVocab."""
    merges = tok_json["model"].get("merges") or []
    if merges and not isinstance(merges[0], str):
        return [" ".join("".join(chr(ord(c) + 256) if c == " " else c for c in part) for part in pair) for pair in merges]
    return list(merges)


def _added_specials(model_dir: Path, tokenizer: Any, special_ids: dict[str, int]) -> tuple[bool, bool]:
    """Whether encoding adds BOS / EOS, read off the tokenizer's behaviour rather than its config."""
    text = "Hello world"
    plain = tokenizer.encode(text, add_special_tokens=False)
    full = tokenizer.encode(text, add_special_tokens=True)
    for start in range(len(full) - len(plain) + 1):
        if full[start : start + len(plain)] == plain:
            before, after = full[:start], full[start + len(plain) :]
            break
    else:
        before, after = None, None
    bos, eos = special_ids.get("bos"), special_ids.get("eos")
    if before not in ([], [bos]) or after not in ([], [eos]):
        raise ExportError(
            f"cannot export the tokenizer of {model_dir} to GGUF: it adds {before} before and {after} after "
            "the text, and a GGUF can only state whether BOS and EOS are added",
        )
    return before == [bos], after == [eos]


# --- tensors -----------------------------------------------------------------------------------


def _weight_files(model_dir: Path) -> dict[str, Path]:
    """Hugging Face tensor name -> the safetensors file holding it."""
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (OSError, ValueError, KeyError) as err:
            raise ExportError(f"cannot read {index}: {err}") from None
        return {name: model_dir / file for name, file in weight_map.items()}
    single = model_dir / "model.safetensors"
    if single.is_file():
        from safetensors import safe_open

        with safe_open(str(single), framework="pt") as handle:
            return dict.fromkeys(handle.keys(), single)
    if any(model_dir.glob("*.bin")) or any(model_dir.glob("*.pt")):
        raise ExportError(
            f"{model_dir} holds pickled PyTorch weights, which export does not read",
            fix="re-save the model as safetensors (save_pretrained(..., safe_serialization=True))",
        )
    raise ExportError(f"{model_dir} has no model.safetensors", fix="export a Hugging Face model folder")


def _expected_tensors(hp: _Hparams) -> dict[str, tuple[str, tuple[int, ...], str | None]]:
    """Hugging Face name -> (gguf MODEL_TENSOR member, shape, permutation) for every tensor to write."""
    q_rows, kv_rows = hp.head_count * hp.head_dim, hp.head_count_kv * hp.head_dim
    layer_shapes = {
        "input_layernorm.weight": (hp.hidden_size,),
        "self_attn.q_proj.weight": (q_rows, hp.hidden_size),
        "self_attn.k_proj.weight": (kv_rows, hp.hidden_size),
        "self_attn.v_proj.weight": (kv_rows, hp.hidden_size),
        "self_attn.o_proj.weight": (hp.hidden_size, q_rows),
        "post_attention_layernorm.weight": (hp.hidden_size,),
        "mlp.gate_proj.weight": (hp.feed_forward_length, hp.hidden_size),
        "mlp.up_proj.weight": (hp.feed_forward_length, hp.hidden_size),
        "mlp.down_proj.weight": (hp.hidden_size, hp.feed_forward_length),
    }
    expected = {"model.embed_tokens.weight": ("TOKEN_EMBD", (hp.vocab_size, hp.hidden_size), None)}
    for layer in range(hp.block_count):
        for suffix, (kind, permute) in _LAYER_TENSORS.items():
            expected[f"model.layers.{layer}.{suffix}"] = (kind, layer_shapes[suffix], permute)
    expected["model.norm.weight"] = ("OUTPUT_NORM", (hp.hidden_size,), None)
    if not hp.tie_word_embeddings:
        expected["lm_head.weight"] = ("OUTPUT", (hp.vocab_size, hp.hidden_size), None)
    return expected


def _plan_tensors(model_dir: Path, hp: _Hparams, *, f16: bool) -> list[_Tensor]:
    """Every tensor to write, checked against config.json before anything is written."""
    import gguf
    from safetensors import safe_open

    files = _weight_files(model_dir)
    expected = _expected_tensors(hp)
    ignored = {name for name in files if name.endswith(_SKIPPED_SUFFIXES)}
    if hp.tie_word_embeddings:
        ignored.add("lm_head.weight")  # a tied copy of the embeddings; llama.cpp reuses token_embd
    missing = [name for name in expected if name not in files]
    unexpected = sorted(set(files) - set(expected) - ignored)
    if missing:
        raise ExportError(
            f"cannot export {model_dir} to GGUF: tensor(s) {', '.join(missing[:3])} are missing",
            fix="export a complete model folder (merge any adapter first)",
        )
    if unexpected:
        raise ExportError(
            f"cannot export {model_dir} to GGUF: tensor(s) {', '.join(unexpected[:3])} have no place in a "
            "llama GGUF",
            fix="only plain Llama/Mistral weights are supported (no biases or extra modules)",
        )

    shapes: dict[str, tuple[int, ...]] = {}
    for file in sorted(set(files.values())):
        if not file.is_file():
            raise ExportError(f"weight file {file} is missing", fix="export a complete model folder")
        with safe_open(str(file), framework="pt") as handle:
            for name in handle.keys():  # noqa: SIM118 - a safe_open handle is not iterable
                if name in expected:
                    shapes[name] = tuple(handle.get_slice(name).get_shape())

    plan = []
    for hf_name, (kind, shape, permute) in expected.items():
        if shapes.get(hf_name) != shape:
            raise ExportError(
                f"cannot export {model_dir} to GGUF: {hf_name} has shape {list(shapes.get(hf_name, ()))}, "
                f"config.json implies {list(shape)}",
            )
        template = gguf.TENSOR_NAMES[getattr(gguf.MODEL_TENSOR, kind)]
        block = hf_name.split(".")[2] if hf_name.startswith("model.layers.") else None
        plan.append(
            _Tensor(
                gguf_name=(template.format(bid=block) if block is not None else template) + ".weight",
                hf_name=hf_name,
                file=files[hf_name],
                shape=shape,
                f16=f16 and len(shape) > 1,  # llama.cpp keeps 1-D tensors (norms) in F32
                permute_heads={"q": hp.head_count, "k": hp.head_count_kv, None: None}[permute],
            )
        )
    return plan


def _permute_for_rope(weights: Any, n_head: int) -> Any:
    """llama.cpp's `LlamaModel.permute`: per head, interleave the two rotary halves of the rows."""
    return (
        weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def _load_tensor(handle: Any, tensor: _Tensor) -> Any:
    """The tensor as the numpy array to store: float32, permuted if needed, then F16 if asked."""
    import numpy as np
    import torch

    data = handle.get_tensor(tensor.hf_name).to(torch.float32).numpy()
    if tensor.permute_heads is not None:
        data = _permute_for_rope(data, tensor.permute_heads)
    if not np.isfinite(data).all():
        raise ExportError(f"tensor {tensor.hf_name} holds NaN or infinite values", fix="check the training run")
    if tensor.f16:
        if np.abs(data).max() > _F16_MAX:
            raise ExportError(
                f"tensor {tensor.hf_name} has values beyond the float16 range (±{_F16_MAX:g})",
                fix="export with dtype f32",
            )
        return np.ascontiguousarray(data, dtype=np.float16)
    return np.ascontiguousarray(data, dtype=np.float32)


# --- writing -----------------------------------------------------------------------------------


def _writer_class() -> type:
    import gguf

    class _Writer(gguf.GGUFWriter):
        """A GGUFWriter that can also write an empty typed array.

        A byte-level BPE vocabulary without merges (every token a single byte) still needs a
        `tokenizer.ggml.merges` key: llama.cpp refuses a gpt2 tokenizer without one, and transformers
        looks merges up by that key. The stock writer rejects empty arrays.
        """

        def _pack_val(self, val: Any, vtype: Any, add_vtype: bool, sub_type: Any = None) -> bytes:
            if vtype == gguf.GGUFValueType.ARRAY and sub_type is not None and len(val) == 0:
                head = self._pack("I", vtype) if add_vtype else b""
                return head + self._pack("I", sub_type) + self._pack("Q", 0)
            return super()._pack_val(val, vtype, add_vtype, sub_type)

    return _Writer


def _write(path: Path, name: str, hp: _Hparams, vocab: _Vocab, tensors: list[_Tensor], *, f16: bool) -> None:
    import gguf
    import numpy as np
    from safetensors import safe_open

    writer = _writer_class()(str(path), arch=GGUF_ARCHITECTURE)
    try:
        writer.add_name(name)
        writer.add_block_count(hp.block_count)
        writer.add_context_length(hp.context_length)
        writer.add_embedding_length(hp.hidden_size)
        writer.add_feed_forward_length(hp.feed_forward_length)
        writer.add_head_count(hp.head_count)
        writer.add_head_count_kv(hp.head_count_kv)
        writer.add_rope_freq_base(hp.rope_theta)
        writer.add_layer_norm_rms_eps(hp.rms_norm_eps)
        writer.add_key_length(hp.head_dim)
        writer.add_value_length(hp.head_dim)
        writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if f16 else gguf.LlamaFileType.ALL_F32)
        writer.add_vocab_size(hp.vocab_size)
        writer.add_rope_dimension_count(hp.head_dim)
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)

        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre(vocab.pre)
        writer.add_token_list(vocab.tokens)
        writer.add_token_types(vocab.token_types)
        if vocab.merges:
            writer.add_token_merges(vocab.merges)
        else:
            writer.add_key_value(
                gguf.Keys.Tokenizer.MERGES, [], gguf.GGUFValueType.ARRAY, sub_type=gguf.GGUFValueType.STRING
            )
        for kind, token_id in vocab.special_ids.items():
            getattr(writer, f"add_{kind}_token_id")(token_id)
        writer.add_add_bos_token(vocab.add_bos)
        writer.add_add_eos_token(vocab.add_eos)
        if vocab.chat_template:
            writer.add_chat_template(vocab.chat_template)

        for tensor in tensors:
            dtype = np.dtype(np.float16 if tensor.f16 else np.float32)
            nbytes = int(np.prod(tensor.shape)) * dtype.itemsize
            writer.add_tensor_info(tensor.gguf_name, list(tensor.shape), dtype, nbytes)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        with ExitStack() as stack:
            handles: dict[Path, Any] = {}
            for tensor in tensors:  # one at a time, in the order of the tensor table
                if tensor.file not in handles:
                    handles[tensor.file] = stack.enter_context(safe_open(str(tensor.file), framework="pt"))
                writer.write_tensor_data(_load_tensor(handles[tensor.file], tensor))
    finally:
        writer.close()
