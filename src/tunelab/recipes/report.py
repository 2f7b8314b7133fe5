"""The report recipe: read a run folder, diagnose it, draw its figures, render one self-contained HTML
page, write.

Everything is built in memory first and written only when all of it succeeded (each file atomically,
the page last), so a failure never leaves a half report behind.
"""

from __future__ import annotations

from pathlib import Path

from tunelab.recipes.diagnose import diagnose_run
from tunelab.report import html, load_run, sections
from tunelab.report.files import write_all

PAGE = "report.html"


def write_report(run_path: str | Path, out_dir: str | Path | None = None) -> Path:
    """Write report.html and its PNG figures into `out_dir` (default runs/<id>/report/); returns the page."""
    run = load_run(run_path)
    figures = sections.figures(run)
    findings = diagnose_run(run.path)["findings"]
    page = html.render(sections.context(run, findings), figures)
    folder = Path(out_dir) if out_dir is not None else run.path / "report"
    written = write_all(folder, {**figures, PAGE: page})
    return written[PAGE]
