"""Causal-lm building blocks: one renderer per record kind (registered in render.RENDERERS) and packing."""

from tunelab.tasks.lm import chat, preference, prompt_completion, prompts, text, unpaired  # noqa: F401  (registration)
from tunelab.tasks.lm.render import RENDERERS, Encoded, Renderer, renderer_for, to_labels

__all__ = ["RENDERERS", "Encoded", "Renderer", "renderer_for", "to_labels"]
