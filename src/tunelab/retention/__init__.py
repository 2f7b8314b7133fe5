"""Forgetting: retention sets scored before and after training (sets.py) and the base model's scores
cached across runs (base_cache.py). Beside the engine: it runs models through `Trainer.evaluate`."""
