"""`tunelab predict`: run a trained model on raw inputs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tunelab.runs import RunFolder
from tunelab.tasks import TASKS


def predict_texts(run_path: str | Path, texts: list[str], top_k: int = 1) -> list[dict[str, Any]]:
    run = RunFolder.open(run_path)
    config = run.config()
    task = TASKS.get(config.task)()
    model, tokenizer = task.load_trained(run.path, config)
    return task.predict(model, tokenizer, texts, config, top_k=top_k)
