"""Pick a table's record format and turn every row into its canonical layout, keeping row numbers."""

from __future__ import annotations

import logging
from typing import Any

import datasets

from tunelab.choices import closest
from tunelab.config.schema import DataConfig
from tunelab.data.fingerprint import digest
from tunelab.data.formats import quiet_datasets
from tunelab.data.loading import Table
from tunelab.data.records.base import FEATURES, RECORDS, RecordFormat, RowError
from tunelab.errors import DataError

logger = logging.getLogger(__name__)

BAD_ROW_FIX = "fix or remove the row, or set data.bad_rows: skip"
EXAMPLES = 5  # skipped rows reported by location
BATCH = 1000


def detect_records(columns: list[str], text_column: str, where: str, features: Any = None) -> str:
    """The record format a table with `columns` (and, when known, `features`) is in; DataError naming
    `where` when none fits.

    The order matters when several fit: a row with both "messages" and "text" is a chat row.
    """
    present = set(columns)
    chat = _prompt_is_a_message_list(features)
    if {"preferred_output", "non_preferred_output"} <= present:
        return "openai-preference"
    if {"prompt", "chosen", "rejected"} <= present:
        return "chat-preference" if chat else "preference"
    if {"prompt", "completion", "label"} <= present:
        return "chat-unpaired-preference" if chat else "unpaired-preference"
    if "messages" in present:
        return "messages"
    if "conversations" in present:
        return "sharegpt"
    if {"instruction", "output"} <= present:
        return "alpaca"
    if {"prompt", "completion"} <= present:
        return "prompt-completion"
    if "prompt" in present and text_column not in present:  # prompts for GRPO; with a text column it is text
        return "chat-prompt-only" if chat else "prompt-only"
    if text_column in present:
        return "text"
    raise DataError(
        f"{where}: cannot tell how the rows are laid out (columns: {', '.join(columns)})",
        fix=f"name the columns like one of: messages | conversations | instruction/output | prompt/completion | "
        f"prompt/chosen/rejected | prompt/completion/label | prompt (GRPO) | {text_column}, or set data.records",
    )


def _prompt_is_a_message_list(features: Any) -> bool:
    prompt = features.get("prompt") if features is not None else None
    return isinstance(prompt, (list, datasets.List))


def record_format(table: Table, cfg: DataConfig) -> RecordFormat:
    """The configured (or detected) record format of `table`, after checking its columns exist."""
    present = table.dataset.column_names
    name = cfg.records
    if name == "auto":
        name = detect_records(present, cfg.text_column, table.name, table.dataset.features)
        logger.info("%s: rows are %s records (from the columns)", table.name, name)
    fmt = RECORDS.get(name)
    for column in fmt.columns(cfg):
        if column not in present:
            hint = closest(column, present)
            fix = f"did you mean {hint!r}? " if hint else ""
            fix += "set data.text_column" if fmt.name == "text" else "rename the column"
            raise DataError(
                f"{table.name}: data.records is {name} but column {column!r} is missing "
                f"(columns: {', '.join(present)})",
                fix=f"{fix}, or set data.records to match the data (auto detects it)",
            )
    return fmt


def normalize_records(table: Table, cfg: DataConfig) -> tuple[datasets.Dataset, dict[str, Any]]:
    """Every row of `table` in its record format's canonical layout, plus an int `row` column.

    `row` is the row's index in `table.dataset`, so `table.where(row)` names its file and line.
    Malformed rows stop with DataError (data.bad_rows: error) or are dropped and reported
    (skip). Returns the dataset and a JSON-able summary:
    {"records", "kind", "rows", "skipped", "skipped_examples": [{"where", "reason"}, ...]}.
    """
    fmt = record_format(table, cfg)
    source = table.dataset
    read = (list(source.column_names) if fmt.keeps_other_columns
            else fmt.columns(cfg) + [c for c in fmt.optional if c in source.column_names])
    skipped: list[tuple[int, str]] = []  # the first EXAMPLES (row, reason)
    count = 0

    def convert(batch: dict[str, list[Any]], indices: list[int]) -> dict[str, list[Any]]:
        nonlocal count
        out: dict[str, list[Any]] = {column: [] for column in (*FEATURES[fmt.kind], "row")}
        for j, index in enumerate(indices):
            try:
                canonical = fmt.convert({column: batch[column][j] for column in read}, cfg)
            except RowError as err:
                if cfg.bad_rows == "error":
                    raise DataError(f"{table.where(index)}: {err.reason}", fix=BAD_ROW_FIX) from None
                count += 1
                if len(skipped) < EXAMPLES:
                    skipped.append((index, err.reason))
                continue
            for column, value in canonical.items():
                out[column].append(value)
            out["row"].append(index)
        return out

    features = datasets.Features({**FEATURES[fmt.kind], "row": datasets.Value("int64")})
    with quiet_datasets():
        dataset = source.select_columns(read).map(
            convert,
            batched=True,
            batch_size=BATCH,
            with_indices=True,
            remove_columns=read,
            features=features,
            # convert() records skipped rows as a side effect, so it must run every time; an explicit
            # fingerprint also spares datasets from hashing the closure (and the table inside it).
            load_from_cache_file=False,
            new_fingerprint=digest(source._fingerprint, fmt.name, cfg.text_column, cfg.bad_rows, "records-v1"),
        )
    examples = [{"where": table.where(index), "reason": reason} for index, reason in skipped]
    if count:
        logger.warning(
            "%s: skipped %d malformed row(s) (data.bad_rows: skip); first at %s: %s",
            table.name, count, examples[0]["where"], examples[0]["reason"],
        )
    if dataset.num_rows == 0 and count:
        # Skipping every row is almost always the wrong record format, not bad data.
        first = f"{examples[0]['where']}: {examples[0]['reason']}"
        raise DataError(
            f"{table.name}: no usable rows, all {count} are malformed (first: {first})",
            fix="check that data.records matches how the rows are laid out, and fix the rows",
        )
    info = {"records": fmt.name, "kind": fmt.kind, "rows": dataset.num_rows, "skipped": count,
            "skipped_examples": examples}
    return dataset, info
