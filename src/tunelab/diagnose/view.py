"""A finished run as the rules read it: its files (every one optional) and the numbers they agree on."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunelab.report import load_run
from tunelab.report.display import LOWER_IS_BETTER
from tunelab.report.load import RunData
from tunelab.runs.folder import read_json_object



@dataclass
class RunView:
    run: RunData
    data_check: dict[str, Any] | None
    suspects: list[dict[str, Any]]
    model_config: dict[str, Any] | None

    @classmethod
    def open(cls, path: str | Path) -> "RunView":
        run = load_run(path)
        return cls(run=run, data_check=read_json_object(run.path / "data_check.json"),
                   suspects=run.suspects or [],
                   model_config=read_json_object(run.path / "model" / "config.json"))

    # ---- config ---------------------------------------------------------------------------
    def setting(self, dotted: str, default: Any = None) -> Any:
        """A value of the run's config.yaml by dotted key (`train.learning_rate`), else `default`."""
        node: Any = self.run.config
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                return default
            node = node[part]
        return default if node is None else node

    @property
    def method(self) -> str:
        return str(self.setting("method.name", "full"))

    @property
    def layers(self) -> int | None:
        """Transformer blocks of the trained model (its saved config.json), when known."""
        config = self.model_config or {}
        for key in ("num_hidden_layers", "n_layer", "num_layers"):
            if isinstance(config.get(key), int):
                return config[key]
        return None

    # ---- curves ---------------------------------------------------------------------------
    @property
    def train_steps(self) -> list[dict[str, Any]]:
        """Training lines of metrics.jsonl in step order (a resumed step keeps its last line)."""
        by_step = {int(r["step"]): r for r in self.run.train_records if "step" in r and "loss" in r}
        return [by_step[s] for s in sorted(by_step)]

    @property
    def evaluations(self) -> list[dict[str, Any]]:
        by_step = {int(r["step"]): r for r in self.run.validation_records if "step" in r}
        return [by_step[s] for s in sorted(by_step)]

    # ---- results --------------------------------------------------------------------------
    @property
    def metric(self) -> str:
        return self.run.selection_metric or "loss"

    @property
    def greater_is_better(self) -> bool:
        return self.metric not in LOWER_IS_BETTER

    def result(self, split: str, metric: str | None = None) -> float | None:
        """A finite number of eval.json's `split` section (validation, test, train_sample)."""
        value = ((self.run.eval or {}).get(split) or {}).get(metric or self.metric)
        return value if is_finite(value) else None

    def base_result(self, split: str = "validation") -> float | None:
        value = (((self.run.eval or {}).get("base") or {}).get(split) or {}).get(self.metric)
        return value if is_finite(value) else None

    @property
    def base_kind(self) -> str | None:
        return ((self.run.eval or {}).get("base") or {}).get("kind")


def is_finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)

