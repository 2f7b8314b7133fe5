"""The compare recipe: read two or more run folders, tabulate them, overlay their curves, diff their configs.

Writes into one folder (default comparisons/compare-<timestamp>/ in the working directory):
curves.png, config_diff.txt and summary.json (the table rows), each atomically, summary.json last.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunelab.errors import TunelabError
from tunelab.report import compare, load_run, plots
from tunelab.report.files import write_all
from tunelab.runs import now_iso


@dataclass
class Comparison:
    metric: str
    rows: list[dict[str, Any]]
    differing: list[tuple[str, list[str]]]
    folder: Path
    files: dict[str, Path]


def compare_runs(paths: list[str | Path], out_dir: str | Path | None = None, metric: str | None = None) -> Comparison:
    """Compare the runs at `paths` (at least two) and write the comparison files."""
    if len(paths) < 2:
        raise TunelabError(f"compare needs at least two run folders, got {len(paths)}",
                           fix="tunelab compare runs/<id1> runs/<id2> [...]")
    runs = [load_run(path) for path in paths]
    chosen = compare.pick_metric(runs, metric)
    rows = [compare.row(run, chosen) for run in runs]
    differing = compare.config_diff(runs)
    files: dict[str, bytes | str] = {}
    png = plots.compare_curves([compare.curves(run, chosen) for run in runs], chosen)
    if png is not None:
        files["curves.png"] = png
    files["config_diff.txt"] = compare.diff_text(runs, differing)
    files["summary.json"] = json.dumps({"created": now_iso(), "metric": chosen, "runs": rows}, indent=2) + "\n"
    folder = Path(out_dir) if out_dir is not None else _default_folder()
    return Comparison(chosen, rows, differing, folder, write_all(folder, files))


def _default_folder() -> Path:
    """comparisons/compare-<timestamp>/ in the working directory; never one that already exists."""
    base = Path.cwd() / "comparisons" / f"compare-{time.strftime('%Y%m%d-%H%M%S')}"
    folder, n = base, 1
    while folder.exists():
        n += 1
        folder = base.with_name(f"{base.name}-{n}")
    return folder
