"""`tunelab eval`: score a trained run on new held-out data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tunelab.engine.accel import make_accelerator
from tunelab.engine.evaluation import evaluate
from tunelab.errors import RunError
from tunelab.models import resolve_model
from tunelab.runs import RunFolder
from tunelab.tasks import TASKS


def evaluate_run(run_path: str | Path, data_path: str | Path) -> tuple[dict[str, Any], Path]:
    run = RunFolder.open(run_path)
    config = run.config()
    if not (run.model_dir / "config.json").is_file():
        raise RunError(f"{run.path} has no saved model (status: {run.read_json('run.json').get('status')})",
                       fix="evaluate a run that finished, or resume it with `tunelab train --resume`")
    task = TASKS.get(config.task)()
    model, tokenizer = task.load_trained(run.model_dir, config)
    labels = [model.config.id2label[i] for i in range(len(model.config.id2label))]
    resolved = resolve_model(config.model.model_copy(update={"source": str(run.model_dir)}))
    data = task.prepare_heldout(config, tokenizer, resolved, str(data_path), labels)
    accelerator = make_accelerator(config)
    model = accelerator.prepare(model)
    batch_size = config.eval.batch_size or 2 * config.train.batch_size
    metrics = evaluate(model, task, data.test, data, accelerator, batch_size)
    metrics["data"] = data.info["files"]
    target = run.path / "evals" / f"{Path(data_path).stem}.json"
    target.parent.mkdir(exist_ok=True)
    run.write_json(str(target.relative_to(run.path)), metrics)
    return metrics, target
