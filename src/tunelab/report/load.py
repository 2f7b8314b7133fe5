"""Reading a run folder for reports: every file optional, nothing here raises on a missing or damaged file.

Reports must work on old runs (written before eval.json gained base/retention/gates), on failed runs
without eval.json and on runs still training (metrics.jsonl with a half-written last line). The config
is read as plain YAML, not validated: a run made by an older tunelab may no longer match the schema,
and a report should still show it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tunelab.runs import RunFolder

SUSPECTS_FILE = "suspects_train.jsonl"  # the label-noise candidates a classifier run writes
MAX_SAMPLE_ROWS = 5000  # enough for any report table; a huge predictions file is not read whole


@dataclass
class RunData:
    """Everything a report or a comparison reads from one run folder."""

    path: Path
    run: dict[str, Any]
    config: dict[str, Any]
    config_text: str
    metrics: list[dict[str, Any]]
    eval: dict[str, Any] | None = None
    data: dict[str, Any] | None = None
    samples: list[dict[str, Any]] | None = None
    generations: list[dict[str, Any]] | None = None
    suspects: list[dict[str, Any]] | None = None  # suspects_train.jsonl: label-noise candidates
    problems: list[str] = field(default_factory=list)

    @property
    def id(self) -> str:
        return str(self.run.get("id") or self.path.name)

    @property
    def train_records(self) -> list[dict[str, Any]]:
        return [r for r in self.metrics if "split" not in r]

    @property
    def validation_records(self) -> list[dict[str, Any]]:
        return [r for r in self.metrics if r.get("split") == "validation"]

    @property
    def selection_metric(self) -> str | None:
        """The metric that picked the best checkpoint: eval.metric, else what the run recorded as best."""
        configured = (self.config.get("eval") or {}).get("metric")
        best = self.run.get("best") or (self.eval or {}).get("best") or {}
        return configured or best.get("metric")

    def section(self, name: str) -> dict[str, Any]:
        """A config section as a dict ({} when absent)."""
        value = self.config.get(name)
        return value if isinstance(value, dict) else {}


def load_run(path: str | Path) -> RunData:
    """Read a run folder; raises RunError only when `path` is not a run folder at all."""
    folder = RunFolder.open(path)
    problems: list[str] = []
    run = _json(folder.path / "run.json", problems) or {}
    config_text = (folder.path / "config.yaml").read_text(encoding="utf-8", errors="replace")
    try:
        config = yaml.safe_load(config_text) or {}
    except yaml.YAMLError as err:
        problems.append(f"config.yaml could not be parsed: {err}")
        config = {}
    return RunData(
        path=folder.path,
        run=run,
        config=config if isinstance(config, dict) else {},
        config_text=config_text,
        metrics=_jsonl(folder.path / "metrics.jsonl", problems) or [],
        eval=_json(folder.path / "eval.json", problems),
        data=_json(folder.path / "data.json", problems),
        samples=_jsonl(folder.path / "samples_test.jsonl", problems),
        generations=_jsonl(folder.path / "generations.jsonl", problems),
        suspects=_jsonl(folder.path / SUSPECTS_FILE, problems),
        problems=problems,
    )


def _json(path: Path, problems: list[str]) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        problems.append(f"{path.name} could not be read: {err}")
        return None
    return value if isinstance(value, dict) else None


def _jsonl(path: Path, problems: list[str]) -> list[dict[str, Any]] | None:
    """Rows of a jsonl file; unreadable lines are skipped (a running job may be mid-write)."""
    if not path.is_file():
        return None
    rows: list[dict[str, Any]] = []
    bad = 0
    with open(path, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            if len(rows) >= MAX_SAMPLE_ROWS and path.name != "metrics.jsonl":
                break
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError:
                bad += 1
                continue
            if isinstance(row, dict):
                rows.append(row)
    if bad:
        problems.append(f"{path.name}: {bad} unreadable line(s) skipped")
    return rows
