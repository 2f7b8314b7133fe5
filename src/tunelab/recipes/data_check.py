"""`tunelab data check CONFIG|NAME`: run the data checks on a config's splits or a dataset version,
write data_check.json and data_check.html, and record the outcome in the workspace."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunelab.config import load_config
from tunelab.config.schema import DataConfig, GovernanceConfig
from tunelab.data.loading import load_table
from tunelab.datacheck.suite import SplitData, check_splits
from tunelab.errors import TunelabError
from tunelab.models import load_tokenizer, resolve_model
from tunelab.recipes.config_data import run_data_check, write_report
from tunelab.recipes.governance import resolve_data
from tunelab.tasks import TASKS
from tunelab.workspace import Workspace
from tunelab.workspace.data_checks import add_check
from tunelab.workspace.datasets import get_version, version_path


@dataclass
class CheckOutcome:
    report: dict[str, Any]
    folder: Path
    refused: bool  # errors, or PII under governance.pii: block


def check_target(target: str, overrides: list[str], *, out_dir: Path | None = None, label_column: str | None = None,
                 use_tokenizer: bool = True, workspace: Workspace | None = None) -> CheckOutcome:
    """`workspace`: the one to read and record in (the server passes its own); default: found from the cwd."""
    if target.endswith((".yaml", ".yml")) or Path(target).is_file():
        return _check_config(Path(target), overrides, out_dir, use_tokenizer)
    return _check_dataset(target, out_dir, label_column, workspace or Workspace.require())


def _default_folder(ws: Workspace | None, name: str) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    safe = "".join(c if c.isalnum() or c in "._-" else "-" for c in name)
    base = ws.artifacts / "checks" if ws is not None else Path("data-checks")
    return base / f"{safe}-{stamp}"


def _check_config(path: Path, overrides: list[str], out_dir: Path | None, use_tokenizer: bool) -> CheckOutcome:
    config = load_config(path, overrides)
    resolved, inputs, ws = resolve_data(config)
    tokenizer = _tokenizer(resolved) if use_tokenizer else None
    folder = out_dir or _default_folder(ws, path.stem)
    report = run_data_check(resolved, out_dir=folder, tokenizer=tokenizer)
    if ws is not None:
        versions = [i.version for i in inputs if i.version is not None]
        add_check(ws, target=str(path), report=report, report_path=folder / "data_check.json",
                  version=versions[0] if len(versions) == 1 else None)
    blocked = bool((report.get("pii") or {}).get("count")) and config.governance.pii == "block"
    return CheckOutcome(report, folder, refused=not report.get("passed") or blocked)


def _tokenizer(config: Any) -> Any:
    if not TASKS.get(config.task)().uses_tokenizer:
        return None
    return load_tokenizer(resolve_model(config.model), config.model)


def _check_dataset(ref: str, out_dir: Path | None, label_column: str | None, ws: Workspace) -> CheckOutcome:
    with ws.read() as session:
        version = get_version(session, ref)
        name = version.ref
    path = version_path(ws, version)
    try:
        table = load_table(path, DataConfig(train=str(path)), "train")
        rows = table.dataset.to_list()
        # Locations name the version ("topics@v1 line 7"), not the copy under .tunelab/artifacts.
        split = SplitData(rows=rows, where=lambda row: table.where(row).replace(str(path), name), load_error=None)
    except TunelabError as err:
        split = SplitData(rows=[], where=None, load_error=str(err))
        rows = []
    if label_column is None and rows and "label" in rows[0]:
        label_column = "label"
    report = check_splits({"train": split}, label_column=label_column, tokenizer=None,
                          max_length=None, governance=GovernanceConfig())
    folder = out_dir or _default_folder(ws, name)
    write_report(report, folder, title=f"Data check: {name}")
    add_check(ws, target=name, report=report, report_path=folder / "data_check.json", version=version)
    return CheckOutcome(report, folder, refused=not report.get("passed"))
