"""`tunelab predict` (and the server's /predict): run a trained classifier or tagger on raw inputs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunelab.config import Config
from tunelab.runs import RunFolder
from tunelab.tasks import TASKS


@dataclass
class Predictor:
    """A loaded run: what the task's `predict` needs, kept to be reused across calls."""

    config: Config
    task: Any
    model: Any
    tokenizer: Any

    def predict(self, texts: list[str], top_k: int = 1) -> list[dict[str, Any]]:
        return self.task.predict(self.model, self.tokenizer, texts, self.config, top_k=top_k)


def load_predictor(run_path: str | Path) -> Predictor:
    run = RunFolder.open_finished(run_path)
    config = run.config()
    task = TASKS.get(config.task)()
    model, tokenizer = task.load_trained(run.path, config)
    return Predictor(config, task, model.eval(), tokenizer)


def predict_texts(run_path: str | Path, texts: list[str], top_k: int = 1) -> list[dict[str, Any]]:
    return load_predictor(run_path).predict(texts, top_k=top_k)
