"""A config's data files, checked before training and redacted of PII: what `tunelab data check`
(recipes/data_check.py) and training (recipes/governance.py) run on a config.

Why a recipe apart from training: the checks (duplicates, leakage, PII, labels, lengths, encoding)
read every row and should run before any model is built, in CI or by hand, and their report is kept
with the run so promotion policies can require a clean one. Loading goes through `load_table`, so
rows are located exactly as training errors locate them ("data/train.jsonl line 17").
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from tunelab.config import Config
from tunelab.data.fingerprint import canonical_json
from tunelab.data.formats import format_for_extension
from tunelab.data.loading import load_table, quiet_loading
from tunelab.datacheck.html import write_html
from tunelab.datacheck.pii import redact_row
from tunelab.datacheck.suite import SplitData, check_splits
from tunelab.errors import DataError
from tunelab.models import load_tokenizer, resolve_model
from tunelab.runs.folder import atomic_write_text
from tunelab.tasks import TASKS, Task

logger = logging.getLogger(__name__)

REPORT_JSON = "data_check.json"
REPORT_HTML = "data_check.html"
REDACTABLE_FORMATS = ("jsonl", "json", "csv", "tsv", "parquet")
BLOCK_FIX = "remove or redact them, or set governance.pii: redact"
MAX_BLOCK_ROWS = 10


def _task(config: Config) -> type[Task]:
    return TASKS.get(config.task)


def load_splits(config: Config) -> dict[str, SplitData]:
    """Each configured split (train, then validation and test when configured) as rows; a split that
    cannot be loaded carries its one-line error instead of stopping the check."""
    splits = {}
    for split, path in config.data.split_paths().items():
        try:
            with quiet_loading():  # training logs its own loads; a check's would be repeated noise
                table = load_table(path, config.data, split)
        except DataError as err:
            splits[split] = SplitData(rows=[], where=None, load_error=str(err))
            continue
        splits[split] = SplitData(rows=_task(config).check_rows(table.dataset, config), where=table.where)
    return splits


def load_check_tokenizer(config: Config) -> Any:
    """The model's tokenizer for token lengths; None for tasks without one (images)."""
    if not _task(config).uses_tokenizer:
        return None

    return load_tokenizer(resolve_model(config.model), config.model)


def run_data_check(config: Config, *, out_dir: Path, tokenizer: Any = None) -> dict:
    """Check the config's data; write `out_dir/data_check.json` and `data_check.html`; return the report.

    Token lengths and truncation are measured only when `tokenizer` is given (see
    `load_check_tokenizer`). Nothing is written until the report is complete.
    """
    task = _task(config)
    classes = task.class_labels(config)  # None: targets that are not classes (numbers, 0/1 columns)
    report = check_splits(
        load_splits(config),
        label_column=classes[0] if classes else None,
        label_delimiter=classes[1] if classes else None,
        text_rows=task.uses_tokenizer,
        tokenizer=tokenizer,
        max_length=config.train.max_length,
        governance=config.governance,
        ignore_columns={*task.annotation_columns(config), *task.label_columns(config)},
        drop_empty=config.data.empty_text == "drop",
    )
    out_dir = Path(out_dir)
    write_report(report, out_dir, title=f"Data check: {config.output.name or config.task}")
    verdict = "passed" if report["passed"] else "FAILED"
    logger.debug("data check %s: %d error(s), %d warning(s), %d PII finding(s); report in %s", verdict,
                len(report["errors"]), len(report["warnings"]), report["pii"]["count"], out_dir / REPORT_HTML)
    return report


def write_report(report: dict, out_dir: Path, *, title: str) -> None:
    """data_check.json, then data_check.html, each written atomically."""
    atomic_write_text(out_dir / REPORT_JSON, canonical_json(report, indent=2) + "\n")
    write_html(report, out_dir / REPORT_HTML, title=title)


def pii_block_error(report: dict) -> DataError:
    """The error that refuses training under governance.pii: block, naming up to 10 rows and their fields."""
    pii = report["pii"]
    rows: dict[str, list[str]] = {}
    for finding in pii["findings"]:
        rows.setdefault(finding["where"], [])
        item = f"{finding['field']}: {finding['entity']}"
        if item not in rows[finding["where"]]:
            rows[finding["where"]].append(item)
    shown = [f"{where} ({', '.join(items)})" for where, items in list(rows.items())[:MAX_BLOCK_ROWS]]
    total_rows = pii.get("rows", len(rows))
    more = f" and {total_rows - len(shown)} more row(s)" if total_rows > len(shown) else ""
    message = (f"governance.pii is block and the data holds {pii['count']} PII value(s) in {total_rows} row(s): "
               f"{'; '.join(shown)}{more}")
    return DataError(message, fix=BLOCK_FIX)


def pii_block_message(report: dict) -> str:
    """`pii_block_error(report)` as its one line (message and fix)."""
    return str(pii_block_error(report))


def _format_name(src: Path, config: Config) -> str | None:
    if config.data.format != "auto":
        return config.data.format
    if src.is_dir():
        return None  # known after loading
    fmt = format_for_extension(src)
    return fmt.name if fmt else (src.suffix or src.name)


def _unsupported(name: str) -> DataError:
    return DataError(f"governance.pii: redact supports {'/'.join(REDACTABLE_FORMATS)} files, not {name}",
                     fix="use block or warn")


def redact_file(src: Path, dst: Path, config: Config) -> int:
    """Write a redacted copy of the data file `src` to `dst` as JSON Lines; return the replacements made.

    Every row is kept (max_rows does not apply); the label column is copied unscanned.
    """
    src, dst = Path(src), Path(dst)
    name = _format_name(src, config)
    if name is not None and name not in REDACTABLE_FORMATS:
        raise _unsupported(name)
    table = load_table(src, config.data.model_copy(update={"max_rows": None}), "train")
    if table.format not in REDACTABLE_FORMATS:
        raise _unsupported(str(table.format))
    skip = set(_task(config).label_columns(config))
    entities, presidio = list(config.governance.pii_entities), config.governance.presidio
    lines, total = [], 0
    for row in table.dataset.to_list():
        redacted, count = redact_row(row, entities, skip, presidio=presidio)
        total += count
        lines.append(json.dumps(redacted, ensure_ascii=False, default=str) + "\n")
    atomic_write_text(dst, "".join(lines))
    logger.info("redacted %d PII value(s) from %s into %s", total, src, dst)
    return total
