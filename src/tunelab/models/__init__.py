"""Model sources: resolve `model.source` to a local Hugging Face folder, and the model catalog.

Importing this package is cheap: torch and transformers load only when a model is built or loaded.
"""

from tunelab.models.cache import cache_dir
from tunelab.models.catalog import CATALOG, CatalogEntry
from tunelab.models.fingerprint import fingerprint_folder
from tunelab.models.resolve import ResolvedModel, load_tokenizer, model_summary, resolve_model

__all__ = [
    "CATALOG",
    "CatalogEntry",
    "ResolvedModel",
    "cache_dir",
    "fingerprint_folder",
    "load_tokenizer",
    "model_summary",
    "resolve_model",
]
