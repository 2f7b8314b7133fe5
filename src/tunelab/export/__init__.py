"""Exporting trained models to other formats (GGUF for llama.cpp)."""

from __future__ import annotations

from tunelab.export.gguf import SUPPORTED_GGUF_ARCHITECTURES, write_gguf

__all__ = ["SUPPORTED_GGUF_ARCHITECTURES", "write_gguf"]
