"""Convert a .gguf file once into a cached float32 safetensors folder that loads in seconds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tunelab.errors import ModelError
from tunelab.models.cache import build_atomically, models_dir
from tunelab.models.fingerprint import file_sha256

SOURCE_FILE = "tunelab_gguf_source.json"


def gguf_cache_folder(sha256: str) -> Path:
    """Where the conversion of a GGUF file with this content hash lives (content, not name, is the key)."""
    return models_dir() / f"gguf-{sha256[:16]}"


def convert_gguf(gguf_path: Path) -> Path:
    """Return the cached Hugging Face folder for `gguf_path`, converting (dequantizing) it on first use."""
    gguf_path = gguf_path.expanduser().resolve()
    if not gguf_path.is_file():
        raise ModelError(f"GGUF file {gguf_path} does not exist", fix="check model.source")
    sha256 = file_sha256(gguf_path)
    return build_atomically(gguf_cache_folder(sha256), lambda tmp: _convert_into(gguf_path, sha256, tmp))


def _gguf_load_kwargs() -> dict[str, Any]:
    # Newer transformers keep GGUF blocks packed when a matmul kernel is installed; packed modules
    # cannot be saved as plain weights, so always ask for a dense model.
    try:
        from transformers import GgufConfig
    except ImportError:  # older transformers 5.x always dequantizes
        return {}
    return {"quantization_config": GgufConfig(dequantize=True)}


def strip_quantizer(model: Any) -> None:
    """Make a dequantized GGUF-loaded model saveable as a plain model.

    `save_pretrained` refuses models that still carry a non-serializable quantizer, and a left-over
    `quantization_config` in config.json would make the saved folder load as GGUF again.
    """
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    if getattr(model, "is_quantized", False):
        model.is_quantized = False


def _convert_into(gguf_path: Path, sha256: str, folder: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # Absolute gguf_file: transformers would otherwise look for a same-named file in the cwd first.
    where, name = str(gguf_path.parent), str(gguf_path)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            where, gguf_file=name, dtype=torch.float32, trust_remote_code=False, **_gguf_load_kwargs()
        )
        tokenizer = AutoTokenizer.from_pretrained(where, gguf_file=name, trust_remote_code=False)
    except (ValueError, KeyError, OSError, NotImplementedError, RuntimeError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelError(
            f"cannot convert GGUF file {gguf_path}: {first_line}",
            fix="use a GGUF of a causal-LM architecture transformers supports (e.g. llama, qwen2, mistral), "
            "or the original Hugging Face folder",
        ) from None
    strip_quantizer(model)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    (folder / SOURCE_FILE).write_text(
        json.dumps({"gguf_file": gguf_path.name, "sha256": sha256}, indent=2) + "\n"
    )
