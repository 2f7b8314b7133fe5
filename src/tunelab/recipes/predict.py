"""`tunelab predict`: run a trained model on raw inputs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tunelab.errors import RunError
from tunelab.runs import RunFolder
from tunelab.tasks import TASKS


def predict_texts(run_path: str | Path, texts: list[str], top_k: int = 1) -> list[dict[str, Any]]:
    run = RunFolder.open(run_path)
    config = run.config()
    if not (run.model_dir / "config.json").is_file():
        raise RunError(f"{run.path} has no saved model", fix="predict with a run that finished")
    task = TASKS.get(config.task)()
    model, tokenizer = task.load_trained(run.model_dir, config)
    return task.predict(model, tokenizer, texts, config, top_k=top_k)
