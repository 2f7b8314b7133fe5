"""`tunelab reproduce RUN`: train again from a run's recorded inputs and say, metric by metric, whether
the result matches.

The recorded config (with its dataset references) is replayed; every input's bytes must hash to what
the run recorded, and differences in tunelab, torch, transformers, peft, accelerate, the git commit
or the hardware are reported up front, because bit-exact results are only promised on the same
environment (CPU: our batch plan and seeds make a run a pure function of its inputs).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tunelab.config import Config, validate
from tunelab.errors import DataError, RunError
from tunelab.recipes.train import train
from tunelab.runs import collect_environment
from tunelab.workspace import Workspace
from tunelab.workspace.datasets import content_files, content_sha256, parse_ref, resolve
from tunelab.workspace.lineage import get_run, hash_artifacts

log = logging.getLogger(__name__)
KEY_PACKAGES = ("torch", "transformers", "peft", "accelerate", "datasets", "tokenizers", "safetensors", "numpy")


@dataclass
class Reproduction:
    original: str
    new_run: Path
    metrics: list[dict[str, Any]]  # {name, original, reproduced, match}
    artifacts: list[dict[str, Any]]  # {path, match}
    environment: list[str] = field(default_factory=list)  # differences

    @property
    def matches(self) -> bool:
        return all(m["match"] for m in self.metrics) and all(a["match"] for a in self.artifacts)


def reproduce(ident: str, *, output_dir: str | None = None) -> Reproduction:
    ws = Workspace.require()
    ws.check_schema()
    with ws.read() as session:
        row = get_run(session, ident)
        run_id, status, recorded_env = row.id, row.status, row.environment
        config = validate(yaml.safe_load(row.config_yaml), source=f"run {row.id} (recorded config)")
        inputs = [(i.split, i.path, i.sha256) for i in row.inputs]
        original_metrics = row.metrics or {}
        original_artifacts = {a.path: a.sha256 for a in row.artifacts}
    if status != "succeeded":
        raise RunError(f"run {run_id} ended {status!r}; only succeeded runs can be reproduced",
                       fix="pick a succeeded run (tunelab runs list)")
    _check_inputs(ws, config, inputs)
    env_diff = environment_differences(recorded_env, collect_environment())
    for line in env_diff:
        log.warning("environment differs: %s", line)
    if output_dir:
        config = config.model_copy(update={"output": config.output.model_copy(update={"dir": output_dir})})
    name = f"{config.output.name or 'run'}-reproduce"
    config = config.model_copy(update={"output": config.output.model_copy(update={"name": name})})
    outcome = train(config, reproduces=run_id)
    metrics = compare_metrics(original_metrics, outcome.run.read_json("eval.json"))

    artifacts = compare_artifacts(original_artifacts, {a["path"]: a["sha256"] for a in hash_artifacts(outcome.run.path)})
    result = Reproduction(run_id, outcome.run.path, metrics, artifacts, env_diff)
    with ws.write() as txn:
        txn.audit("run.reproduce", "run", outcome.run.id, {
            "original": run_id, "matches": result.matches,
            "mismatched": [m["name"] for m in metrics if not m["match"]]
            + [a["path"] for a in artifacts if not a["match"]], "environment": env_diff})
    return result


def _check_inputs(ws: Workspace, config: Config, inputs: list[tuple[str, str, str]]) -> None:
    """Every recorded input must still have the recorded bytes (references are re-resolved by train)."""
    for split, path_text, sha in inputs:
        key = "objective.rewards" if split == "reward" else f"data.{split}"
        if parse_ref(path_text) is not None:
            path, _version = resolve(ws, path_text)
        else:
            path = Path(path_text)
            if not path.exists():
                raise DataError(f"{key}: {path} no longer exists",
                                fix="restore it, or register data with `tunelab data add` so runs can be reproduced")
        now = content_sha256(path, content_files(path))
        if now != sha:
            raise DataError(f"{key}: {path_text} changed since the run (sha256 {sha[:12]}… → {now[:12]}…)",
                            fix="restore the recorded bytes; dataset versions (NAME@vN) keep them for you")


def environment_differences(recorded: dict[str, Any], current: dict[str, Any]) -> list[str]:
    out = []
    for key in ("tunelab", "python", "git_commit", "machine", "cuda", "torch_threads"):
        if recorded.get(key) != current.get(key):
            out.append(f"{key}: {recorded.get(key)} → {current.get(key)}")
    old, new = recorded.get("packages") or {}, current.get("packages") or {}
    for name in KEY_PACKAGES:
        if old.get(name) != new.get(name):
            out.append(f"{name}: {old.get(name)} → {new.get(name)}")
    return out


def flatten(results: dict[str, Any]) -> dict[str, float]:
    """Numeric metrics of eval.json as dotted names (validation.*, test.*, base.*, generation.*, retention)."""
    flat: dict[str, float] = {}
    for section in ("validation", "test", "base", "generation"):
        for key, value in (results.get(section) or {}).items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                flat[f"{section}.{key}"] = value
    for name, entry in (results.get("retention") or {}).items():
        for key, value in (entry.get("after") or {}).items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                flat[f"retention.{name}.{key}"] = value
    return flat


def compare_metrics(original: dict[str, Any], new: dict[str, Any]) -> list[dict[str, Any]]:
    old, now = flatten(original), flatten(new)
    rows = []
    for name in sorted(set(old) | set(now)):
        a, b = old.get(name), now.get(name)
        same = a is not None and b is not None and (a == b or (math.isnan(a) and math.isnan(b)))
        rows.append({"name": name, "original": a, "reproduced": b, "match": same})
    return rows


def compare_artifacts(original: dict[str, str], new: dict[str, str]) -> list[dict[str, Any]]:
    """Model weights and saved outputs, by hash (run.json and logs hold times, so they are left out)."""
    keep = [p for p in sorted(set(original) | set(new)) if p.startswith(("model/", "adapter/"))]
    return [{"path": p, "original": original.get(p), "reproduced": new.get(p),
             "match": original.get(p) is not None and original.get(p) == new.get(p)} for p in keep]
