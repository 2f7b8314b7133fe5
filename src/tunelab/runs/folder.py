"""The run folder: everything one training run wrote, in a fixed layout.

    runs/<id>/
      run.json          status, timings, best checkpoint and why, trainable parameters, gates
      config.yaml       the resolved config (every default written out)
      data.json         data fingerprints, label set, split sizes, token lengths, tokenization cache hits
      environment.json  packages, threads, hardware
      metrics.jsonl     one line per logged step and per evaluation
      eval_base.json    the starting model and the retention sets, scored before step 1
      eval.json         final metrics: validation, test, base or baseline and gain, retention, gates,
                        warnings
      samples_test.jsonl  the worst-scored test rows
      suspects_train.jsonl  classifiers: training rows whose label stayed improbable (label-noise candidates)
      diagnosis.json    `tunelab diagnose`: findings, evidence, proposed overrides (derived, not hashed)
      train.log         the log
      report/           after `tunelab report`
      checkpoints/      step-NNNNNNN/ (resumable) and best/
      model/            loadable with plain transformers (LoRA merged)
      adapter/          PEFT adapter, for lora/dora

Files are written atomically (temp file + rename) so a crash never leaves a half-written JSON.
"""

from __future__ import annotations

import json
import os
import secrets
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tunelab.config import Config, dump_config, validate
from tunelab.errors import RunError


def atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_json_object(path: Path) -> dict[str, Any] | None:
    """A JSON file holding an object, or None when it is missing, unreadable, half-written or not an object
    (readers of run folders that must not fail on an old, failed or running run)."""
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) else None


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class RunFolder:
    """A run folder on disk; `create` for a new run, `open` for an existing one."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @property
    def id(self) -> str:
        return self.path.name

    @classmethod
    def new_id(cls, config: Config) -> str:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        return f"{config.output.name or 'run'}-{stamp}-{secrets.token_hex(2)}"

    @classmethod
    def create(cls, config: Config, run_id: str) -> "RunFolder":
        path = Path(config.output.dir) / run_id
        path.mkdir(parents=True, exist_ok=False)
        run = cls(path)
        atomic_write_text(path / "config.yaml", dump_config(config))
        run.write_json("run.json", {"id": run_id, "status": "created", "created": now_iso()})
        return run

    @classmethod
    def open(cls, path: str | Path) -> "RunFolder":
        path = Path(path)
        if not (path / "run.json").is_file() or not (path / "config.yaml").is_file():
            raise RunError(f"{path} is not a tunelab run folder (no run.json/config.yaml)", fix="pass runs/<id>")
        return cls(path)

    @classmethod
    def open_finished(cls, path: str | Path) -> RunFolder:
        """A run whose final save completed (status succeeded): the one kind whose model may be used.

        A run killed mid-save has a partial `model/` at best; serving it would answer from whatever
        files landed (a tokenizer rebuilt from config.json once answered every word with [UNK])."""
        run = cls.open(path)
        status = run.read_json("run.json").get("status")
        if status != "succeeded":
            raise RunError(f"run {run.path.name} is unfinished (status {status}): its model is not complete",
                           fix=f"resume it with `tunelab train --resume {run.path}` (or train again)")
        return run

    # ---- reading --------------------------------------------------------------------------
    def config(self) -> Config:
        import yaml

        return validate(yaml.safe_load((self.path / "config.yaml").read_text()), source=str(self.path / "config.yaml"))

    def read_json(self, name: str) -> dict[str, Any]:
        return json.loads((self.path / name).read_text())

    @property
    def model_dir(self) -> Path:
        return self.path / "model"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    # ---- writing --------------------------------------------------------------------------
    def write_json(self, name: str, obj: Any) -> None:
        atomic_write_text(self.path / name, json.dumps(obj, indent=2, default=_jsonable) + "\n")

    def write_jsonl(self, name: str, rows: list[Any]) -> None:
        text = "".join(json.dumps(row, ensure_ascii=False, default=_jsonable) + "\n" for row in rows)
        atomic_write_text(self.path / name, text)

    def update(self, **fields: Any) -> None:
        """Merge fields into run.json (status, timings, best, ...)."""
        record = self.read_json("run.json")
        record.update(fields)
        self.write_json("run.json", record)

    def append_metrics(self, record: dict[str, Any]) -> None:
        with open(self.path / "metrics.jsonl", "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record, default=_jsonable) + "\n")

    def truncate_metrics(self, after_step: int) -> None:
        """Drop metric lines past `after_step` (a resumed run re-does those steps)."""
        path = self.path / "metrics.jsonl"
        if not path.exists():
            return
        kept = [line for line in path.read_text().splitlines() if json.loads(line).get("step", 0) <= after_step]
        atomic_write_text(path, "".join(line + "\n" for line in kept))


def _jsonable(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
