"""Model sources: resolve `model.source` to a local Hugging Face folder, and the model catalog.

Importing this package is cheap: torch and transformers load only when a model is built or loaded.
"""

from tunelab.models.cache import cache_dir
from tunelab.models.catalog import CATALOG, CatalogEntry
from tunelab.models.fingerprint import fingerprint_folder
from tunelab.models.resolve import ResolvedModel, load_tokenizer, model_summary, resolve_model
from tunelab.models.vision import create_vision_backbone, is_timm_folder, vision_data_config

__all__ = [
    "CATALOG",
    "CatalogEntry",
    "ResolvedModel",
    "cache_dir",
    "create_vision_backbone",
    "fingerprint_folder",
    "is_timm_folder",
    "load_tokenizer",
    "model_summary",
    "resolve_model",
    "vision_data_config",
]
