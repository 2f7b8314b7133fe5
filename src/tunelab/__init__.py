"""tunelab: config-driven fine-tuning with reproducible run folders."""

__version__ = "0.1.0"
