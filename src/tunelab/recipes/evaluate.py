"""`tunelab eval`: score a trained run on new held-out data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from tunelab.config import Config
from tunelab.engine.accel import make_accelerator
from tunelab.engine.evaluation import evaluate
from tunelab.models import ResolvedModel, fingerprint_folder, resolve_model
from tunelab.objectives import Objective, build_objective
from tunelab.recipes.heldout import left_out_warnings
from tunelab.runs import RunFolder
from tunelab.tasks import TASKS, PreparedData


def evaluate_run(run_path: str | Path, data_path: str | Path) -> tuple[dict[str, Any], Path]:
    run = RunFolder.open_finished(run_path)
    config = run.config()
    task = TASKS.get(config.task)()
    model, tokenizer = task.load_trained(run.path, config)
    labels = [model.config.id2label[i] for i in range(len(model.config.id2label))]
    # The tokenization cache key needs the tokenizer's fingerprint; the run saved its tokenizer
    # beside the model, so fingerprint that folder.
    saved = run.model_dir if (run.model_dir / "config.json").is_file() else run.path / "adapter"
    resolved = ResolvedModel(str(saved), "local", saved, fingerprint_folder(saved))
    data = task.prepare_heldout(config, tokenizer, resolved, str(data_path), labels)
    accelerator = make_accelerator(config)
    model = accelerator.prepare(model)
    batch_size = config.eval.batch_size or 2 * config.train.batch_size
    task.validate_config(config)  # resolves the objective of configs saved before objectives existed
    objective = build_objective(config, task)  # scores as training validated: pairs, rewards, ...
    if objective.uses_reference:
        data.test = _with_reference(objective, task, config, data, accelerator, batch_size)
    metrics = evaluate(model, objective, data.test, data, accelerator, batch_size)
    metrics["data"] = data.info["files"]
    if warnings := left_out_warnings(data.info):
        metrics["warnings"] = warnings
    target = run.path / "evals" / f"{Path(data_path).stem}.json"
    target.parent.mkdir(exist_ok=True)
    run.write_json(str(target.relative_to(run.path)), metrics)
    return metrics, target


def _with_reference(objective: Objective[Any], task: Any, config: Config, data: PreparedData, accelerator: Any,
                    batch_size: int) -> Any:
    """The new data with the starting model's scores (DPO, KTO): the model is rebuilt from
    model.source as training built it, scores once, and is dropped."""
    torch.manual_seed(config.train.seed)  # rows of added tokens are initialised as training did
    start = accelerator.prepare(task.build_model(config, resolve_model(config.model), data))

    def score(dataset: Any, scorer: Any) -> Any:
        return evaluate(start, scorer, dataset, data, accelerator, batch_size, keep_outputs=True)[1]

    return objective.with_reference(data.test, score, config)  # the starting model is freed on return
