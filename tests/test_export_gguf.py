"""GGUF export: the written file must load back (through transformers' GGUF reader) into the same model.

Round trips compare logits and token ids against the Hugging Face folder the file was written from.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
import torch

from tunelab.errors import ExportError
from tunelab.export import SUPPORTED_GGUF_ARCHITECTURES, write_gguf
from tunelab.models.tiny import (
    build_llama_tokenizer,
    seeded_init,
    tiny_bert_folder,
    tiny_llama_folder,
)

TEXTS = [
    "Hello world",
    "héllo çà Ünïcödé ß",
    "emoji 🦙🚀! 😶‍🌫️",
    "<s>hi</s><pad>",
    "  leading spaces\n\ttabs 123 4567",
    "I'm sure you've 'RE",
]
CHAT = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi 🦙, what is 2+2?"},
    {"role": "assistant", "content": "4."},
]


def load_gguf_model(path: Path):
    from transformers import AutoModelForCausalLM

    # An absolute gguf_file: transformers looks for a bare name in the cwd first.
    return AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=str(path), dtype=torch.float32).eval()


def load_gguf_tokenizer(path: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=str(path))


def load_hf(folder: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(str(folder))


def max_logit_diff(model_a, model_b, sequences: list[list[int]]) -> tuple[float, float]:
    """(max |logits_a - logits_b|, max |logits_a|) over all sequences."""
    diff = scale = 0.0
    with torch.no_grad():
        for ids in sequences:
            a = model_a(torch.tensor([ids])).logits
            b = model_b(torch.tensor([ids])).logits
            diff = max(diff, (a - b).abs().max().item())
            scale = max(scale, a.abs().max().item())
    return diff, scale


def token_sequences(tokenizer) -> list[list[int]]:
    sequences = [tokenizer(text)["input_ids"] for text in TEXTS[:4]]
    sequences.append(tokenizer.apply_chat_template(CHAT, add_generation_prompt=True, return_dict=True)["input_ids"])
    return sequences


def gguf_fields(path: Path) -> tuple[dict, dict]:
    """({key: value}, {tensor name: (type name, shape)}) as stored in the file."""
    import gguf

    reader = gguf.GGUFReader(str(path))
    fields = {key: field.contents() for key, field in reader.fields.items() if not key.startswith("GGUF.")}
    tensors = {t.name: (t.tensor_type.name, tuple(int(d) for d in t.shape)) for t in reader.tensors}
    return fields, tensors


def files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def build_tiny(folder: Path, config) -> Path:
    """A seeded random causal LM of `config`, with the tiny Llama's byte-level tokenizer."""
    from transformers import AutoModelForCausalLM

    with torch.random.fork_rng(devices=[]):
        model = AutoModelForCausalLM.from_config(config)
    seeded_init(model)
    model.save_pretrained(folder)
    build_llama_tokenizer().save_pretrained(folder)
    return folder


def tiny_kwargs() -> dict:
    tokenizer = build_llama_tokenizer()
    return {
        "vocab_size": len(tokenizer),
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 8,
        "intermediate_size": 64,
        "max_position_embeddings": 512,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }


def tiny_variant(tmp_path: Path, *, config=None, tokenizer=None) -> Path:
    """A copy of the tiny Llama folder with config.json / tokenizer.json edited in place."""
    folder = tmp_path / "variant"
    shutil.copytree(tiny_llama_folder(), folder)
    for name, edit in (("config.json", config), ("tokenizer.json", tokenizer)):
        if edit is not None:
            data = json.loads((folder / name).read_text())
            edit(data)
            (folder / name).write_text(json.dumps(data))
    return folder


@pytest.fixture(scope="module")
def tiny_exports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("gguf")
    return {dtype: Path(write_gguf(tiny_llama_folder(), out / f"tiny-{dtype}.gguf", dtype)["file"]) for dtype in ("f32", "f16")}


def test_summary_and_metadata(tiny_exports: dict[str, Path]) -> None:
    summary = write_gguf(tiny_llama_folder(), tiny_exports["f16"].parent / "again.gguf", "f16")
    assert summary["architecture"] == "llama" and summary["source_architecture"] == "LlamaForCausalLM"
    assert summary["dtype"] == "f16" and summary["tensors"] == 2 * 9 + 3
    assert summary["bytes"] == Path(summary["file"]).stat().st_size
    assert "LlamaForCausalLM" in SUPPORTED_GGUF_ARCHITECTURES

    fields, tensors = gguf_fields(tiny_exports["f16"])
    assert fields["general.architecture"] == "llama"
    assert fields["general.name"] == "tiny-f16"
    assert fields["general.file_type"] == 1  # MOSTLY_F16
    expected = {
        "llama.block_count": 2,
        "llama.context_length": 512,
        "llama.embedding_length": 32,
        "llama.feed_forward_length": 64,
        "llama.attention.head_count": 4,
        "llama.attention.head_count_kv": 2,
        "llama.rope.dimension_count": 8,
        "llama.vocab_size": 259,
    }
    assert {key: fields[key] for key in expected} == expected
    assert fields["llama.rope.freq_base"] == pytest.approx(10000.0)
    assert fields["llama.attention.layer_norm_rms_epsilon"] == pytest.approx(1e-6)
    assert fields["tokenizer.ggml.model"] == "gpt2" and fields["tokenizer.ggml.pre"] == "gpt-2"
    assert fields["tokenizer.ggml.merges"] == []  # present, though empty: llama.cpp requires the key
    assert fields["tokenizer.ggml.token_type"][:4] == [3, 3, 3, 1]  # <pad> <s> </s> are control tokens
    assert (fields["tokenizer.ggml.bos_token_id"], fields["tokenizer.ggml.eos_token_id"]) == (1, 2)
    assert fields["tokenizer.ggml.padding_token_id"] == 0
    assert fields["tokenizer.ggml.add_bos_token"] is True and fields["tokenizer.ggml.add_eos_token"] is False
    # 2-D weights in F16, norms in F32; untied embeddings keep their own `output`.
    assert tensors["token_embd.weight"] == ("F16", (32, 259))
    assert tensors["blk.1.attn_k.weight"] == ("F16", (32, 16))
    assert tensors["blk.0.attn_norm.weight"][0] == tensors["output_norm.weight"][0] == "F32"
    assert tensors["output.weight"] == ("F16", (32, 259))
    _, tensors32 = gguf_fields(tiny_exports["f32"])
    assert {kind for kind, _ in tensors32.values()} == {"F32"}


def test_tiny_llama_logits_round_trip(tiny_exports: dict[str, Path]) -> None:
    original, tokenizer = load_hf(tiny_llama_folder())
    sequences = token_sequences(tokenizer)

    diff32, scale = max_logit_diff(original, load_gguf_model(tiny_exports["f32"]), sequences)
    assert diff32 <= 1e-5, f"F32 round trip changed logits by {diff32}"
    diff16, _ = max_logit_diff(original, load_gguf_model(tiny_exports["f16"]), sequences)
    assert diff16 <= 1e-2 * scale, f"F16 round trip changed logits by {diff16} (max |logit| {scale})"


def test_tiny_llama_tokenizer_round_trip(tiny_exports: dict[str, Path]) -> None:
    _, original = load_hf(tiny_llama_folder())
    loaded = load_gguf_tokenizer(tiny_exports["f32"])
    for text in TEXTS:
        assert loaded(text)["input_ids"] == original(text)["input_ids"], text
    assert loaded.decode(loaded("héllo 🦙")["input_ids"], skip_special_tokens=True) == "héllo 🦙"
    assert loaded.chat_template == original.chat_template
    for prompt in (True, False):
        assert loaded.apply_chat_template(CHAT, add_generation_prompt=prompt, tokenize=False) == (
            original.apply_chat_template(CHAT, add_generation_prompt=prompt, tokenize=False)
        )
        assert loaded.apply_chat_template(CHAT, add_generation_prompt=prompt, return_dict=True)["input_ids"] == (
            original.apply_chat_template(CHAT, add_generation_prompt=prompt, return_dict=True)["input_ids"]
        )
    assert (loaded.bos_token, loaded.eos_token, loaded.pad_token) == ("<s>", "</s>", "<pad>")


def test_tied_embeddings_have_no_output_tensor(tmp_path: Path) -> None:
    from transformers import LlamaConfig

    folder = build_tiny(tmp_path / "tied", LlamaConfig(**tiny_kwargs(), tie_word_embeddings=True))
    path = Path(write_gguf(folder, tmp_path / "out" / "tied.gguf", "f32")["file"])
    _, tensors = gguf_fields(path)
    assert "output.weight" not in tensors and "token_embd.weight" in tensors

    original, tokenizer = load_hf(folder)
    loaded = load_gguf_model(path)
    assert loaded.config.tie_word_embeddings is True
    diff, _ = max_logit_diff(original, loaded, token_sequences(tokenizer))
    assert diff <= 1e-5


def test_mistral_exports_as_llama(tmp_path: Path) -> None:
    from transformers import MistralConfig

    folder = build_tiny(tmp_path / "mistral", MistralConfig(**tiny_kwargs(), sliding_window=None))
    path = Path(write_gguf(folder, tmp_path / "out" / "mistral.gguf", "f32")["file"])
    # general.name "mistral" would make transformers read the file as model_type mistral and fail
    assert gguf_fields(path)[0]["general.name"] == "mistral-model"
    original, tokenizer = load_hf(folder)
    loaded = load_gguf_model(path)
    assert type(original).__name__ == "MistralForCausalLM" and type(loaded).__name__ == "LlamaForCausalLM"
    diff, _ = max_logit_diff(original, loaded, token_sequences(tokenizer))
    assert diff <= 1e-5


def test_llama3_pre_tokenizer_round_trip(tmp_path: Path) -> None:
    llama3_split = (
        r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
        r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
    )

    def llama3(tok: dict) -> None:
        tok["pre_tokenizer"] = {
            "type": "Sequence",
            "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": llama3_split}, "behavior": "Isolated", "invert": False},
                {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False},
            ],
        }
        tok["model"]["ignore_merges"] = True

    folder = tiny_variant(tmp_path, tokenizer=llama3)
    path = Path(write_gguf(folder, tmp_path / "out" / "llama3.gguf", "f32")["file"])
    fields, _ = gguf_fields(path)
    assert fields["tokenizer.ggml.pre"] == "llama-bpe"
    _, original = load_hf(folder)
    loaded = load_gguf_tokenizer(path)
    for text in TEXTS:
        assert loaded(text)["input_ids"] == original(text)["input_ids"], text


def _edit(**changes):
    return lambda data: data.update(changes)


@pytest.mark.parametrize(
    ("variant", "message"),
    [
        ("bert", "architecture BertModel"),
        ("classifier", "architecture LlamaForSequenceClassification"),
        ("rope_llama3", "RoPE scaling type 'llama3'"),
        ("attention_bias", "attention_bias"),
        ("sentencepiece", "SentencePiece"),
        ("metaspace", "SentencePiece-style"),
        ("unknown_pre", "no pre-tokenizer matching"),
    ],
)
def test_refuses_what_a_llama_gguf_cannot_hold(tmp_path: Path, variant: str, message: str) -> None:
    def metaspace(tok: dict) -> None:
        tok["pre_tokenizer"] = {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": False}
        tok["decoder"] = {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": False}
        tok["model"]["byte_fallback"] = True

    def unknown_pre(tok: dict) -> None:
        tok["pre_tokenizer"] = {"type": "Whitespace"}

    llama3_rope = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
                   "high_freq_factor": 4.0, "original_max_position_embeddings": 128}
    folders = {
        "bert": lambda: tiny_bert_folder(),
        "classifier": lambda: tiny_variant(tmp_path, config=_edit(architectures=["LlamaForSequenceClassification"])),
        "rope_llama3": lambda: tiny_variant(tmp_path, config=_edit(rope_parameters=llama3_rope)),
        "attention_bias": lambda: tiny_variant(tmp_path, config=_edit(attention_bias=True)),
        "metaspace": lambda: tiny_variant(tmp_path, tokenizer=metaspace),
        "unknown_pre": lambda: tiny_variant(tmp_path, tokenizer=unknown_pre),
    }
    if variant == "sentencepiece":
        folder = tiny_variant(tmp_path)
        (folder / "tokenizer.json").unlink()
        (folder / "tokenizer.model").write_bytes(b"\x0a\x00")
    else:
        folder = folders[variant]()
    out = tmp_path / "out"
    with pytest.raises(ExportError, match=message) as err:
        write_gguf(folder, out / "model.gguf")
    assert "\n" not in str(err.value)
    if variant in ("bert", "classifier"):
        assert all(arch in str(err.value) for arch in SUPPORTED_GGUF_ARCHITECTURES)
    assert files_in(out) == []


def test_failed_write_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tunelab.export.gguf as export_gguf

    real_load = export_gguf._load_tensor
    calls = []

    def failing_load(handle, tensor):
        calls.append(tensor.gguf_name)
        if len(calls) == 3:
            raise ExportError("simulated failure")
        return real_load(handle, tensor)

    monkeypatch.setattr(export_gguf, "_load_tensor", failing_load)
    out = tmp_path / "out"
    out.mkdir()
    (out / "model.gguf").write_text("previous export")
    with pytest.raises(ExportError, match="simulated failure"):
        write_gguf(tiny_llama_folder(), out / "model.gguf", "f16")
    assert files_in(out) == ["model.gguf"]  # no temporary file left
    assert (out / "model.gguf").read_text() == "previous export"  # and the old file untouched


def test_rejects_unknown_dtype(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="unknown GGUF dtype"):
        write_gguf(tiny_llama_folder(), tmp_path / "model.gguf", "q4")  # type: ignore[arg-type]
    assert files_in(tmp_path) == []


@pytest.mark.slow
def test_smollm2_f16_round_trip(tmp_path: Path) -> None:
    from tunelab.config.schema import ModelConfig
    from tunelab.models import resolve_model

    folder = resolve_model(ModelConfig(source="smollm2-135m-instruct")).path
    start = time.perf_counter()
    summary = write_gguf(folder, tmp_path / "smollm2.gguf", "f16")
    path = Path(summary["file"])
    loaded = load_gguf_model(path)
    print(f"SmolLM2 F16 export {summary['bytes'] / 1e6:.0f} MB + load: {time.perf_counter() - start:.1f}s")
    fields, tensors = gguf_fields(path)
    assert "output.weight" not in tensors  # tied embeddings
    assert fields["tokenizer.ggml.add_bos_token"] is False

    original, tokenizer = load_hf(folder)
    assert loaded.config.tie_word_embeddings is True
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}], add_generation_prompt=True, return_dict=True
    )["input_ids"]
    with torch.no_grad():
        expected = original(torch.tensor([prompt])).logits
        got = loaded(torch.tensor([prompt])).logits
    diff, scale = (got - expected).abs().max().item(), expected.abs().max().item()
    print(f"SmolLM2 F16 max |logit diff| {diff:.4f} (max |logit| {scale:.1f})")
    assert diff <= 5e-3 * scale
    assert torch.equal(got.argmax(-1), expected.argmax(-1))

    loaded_tokenizer = load_gguf_tokenizer(path)
    for text in TEXTS + ["<|im_start|>user\nyear 2024<|im_end|>"]:
        assert loaded_tokenizer(text)["input_ids"] == tokenizer(text)["input_ids"], text
    assert loaded_tokenizer.chat_template == tokenizer.chat_template
