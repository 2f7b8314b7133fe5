"""Pick a table's token layout and tag scheme, and turn every row into canonical BIO rows."""

from __future__ import annotations

import logging
import re
from typing import Any

import datasets

from tunelab.choices import closest
from tunelab.config.schema import DataConfig
from tunelab.data.fingerprint import digest
from tunelab.data.formats import quiet_datasets
from tunelab.data.loading import Table
from tunelab.data.tags.layouts import LAYOUTS, TokenLayout
from tunelab.data.tags.schemes import InvalidTags, TagRowError, detect_scheme
from tunelab.errors import DataError

logger = logging.getLogger(__name__)

BAD_ROW_FIX = "fix or remove the row, or set data.bad_rows: skip"
TAGS_FIX = (
    "fix the tags, or set data.invalid_tags: repair (an I- tag that starts an entity becomes B-; "
    "this also reads IOB1 files such as the original CoNLL-2003)"
)
SPANS_FIX = (
    "fix the spans, or set data.invalid_tags: repair (overlapping spans keep the first listed; "
    "empty spans and spans outside the text are dropped)"
)
EXAMPLES = 5  # skipped or repaired rows reported by location
BATCH = 1000

_TEXT = datasets.Value("string")
FEATURES = datasets.Features({
    "tokens": datasets.Sequence(_TEXT),
    "tags": datasets.Sequence(_TEXT),
    "offsets": datasets.Sequence(datasets.Sequence(datasets.Value("int32"), length=2)),
    "text": _TEXT,
    "row": datasets.Value("int64"),
})


def detect_layout(table: Table, cfg: DataConfig) -> str:
    """"conll" for CoNLL files, else "tokens" or "spans" from the columns; DataError when none fits."""
    if table.format == "conll":
        return "conll"
    present = table.dataset.column_names
    for name in ("tokens", "spans"):
        if all(column in present for column in LAYOUTS.get(name).columns(cfg)):
            return name
    wanted = [*LAYOUTS.get("tokens").columns(cfg), *LAYOUTS.get("spans").columns(cfg)]
    hints = [f"{hint!r} for {column!r}" for column in wanted if (hint := closest(column, present)) and hint != column]
    fix = f"{cfg.tokens_column}/{cfg.tags_column} (a tag per word), {cfg.text_column}/{cfg.entities_column} "
    fix += "(character spans) or a .conll file"
    raise DataError(
        f"{table.name}: cannot tell how the token-classification rows are laid out "
        f"(columns: {', '.join(present)})",
        fix=f"use columns {fix}, or set data.tokens_column, data.tags_column, data.text_column and "
        f"data.entities_column{' (did you mean ' + ', '.join(hints) + '?)' if hints else ''}",
    )


def _check_conll_column(table: Table, cfg: DataConfig) -> None:
    """The tag column must exist in every file (files may differ in field count) and not be the token."""
    k = cfg.conll_tag_column
    for start in table.starts or [0]:
        if start >= table.dataset.num_rows:
            continue
        count = len(table.dataset[start]["fields"])
        index = k if k >= 0 else count + k
        if index == 0 or not 0 <= index < count:
            problem = "the token itself" if index == 0 else f"not one of its {count} fields"
            raise DataError(
                f"{table.where(start)}: data.conll_tag_column is {k}, {problem}",
                fix="set data.conll_tag_column to the field that holds the tag (the token is field 0; -1 is the last)",
            )


def _scheme(table: Table, cfg: DataConfig, layout: TokenLayout) -> str | None:
    """The configured scheme, or the one the tags use (one pass over the tag column); None for spans."""
    if not layout.tagged:
        return None
    if cfg.tag_scheme != "auto":
        return cfg.tag_scheme
    columns = layout.columns(cfg)
    seen: set[str] = set()
    for batch in table.dataset.select_columns(columns).iter(batch_size=BATCH):
        for j in range(len(batch[columns[0]])):
            tags = layout.raw_tags({column: batch[column][j] for column in columns}, cfg)
            seen.update(tag for tag in tags if isinstance(tag, str))
    scheme = detect_scheme(seen)
    logger.info("%s: tags are %s (from the prefixes they use)", table.name, scheme)
    return scheme


def _where(table: Table, index: int, layout: str, token: int | None) -> str:
    """`table.where(index)`; for CoNLL, the line of the token the problem is about."""
    where = table.where(index)
    if layout == "conll" and token is not None and (match := re.fullmatch(r"(.*) line (\d+)", where)):
        # A sentence's tokens are consecutive lines from its first one.
        return f"{match[1]} line {int(match[2]) + token}"
    return where


def normalize_token_rows(table: Table, cfg: DataConfig) -> tuple[datasets.Dataset, dict[str, Any]]:
    """Every row of `table` as {"tokens", "tags" (BIO), "offsets", "text", "row"}.

    `row` is the row's index in `table.dataset`, so `table.where(row)` names its file and line.
    Tags are converted to BIO whatever the data's scheme (kept in info["scheme"]; None for the span
    layout). Invalid tag sequences and spans stop with DataError (data.invalid_tags: error) or are
    repaired and counted; other malformed rows stop (data.bad_rows: error) or are skipped and
    counted. Returns the dataset and a JSON-able summary: {"layout", "scheme", "rows", "skipped",
    "repaired" (repairs made), "widened" (spans widened to whole words), "examples": [{"where",
    "reason", "action": "skipped" | "repaired"}] (at most 5), "entity_counts": {type: entities}}.
    """
    name = detect_layout(table, cfg)
    layout = LAYOUTS.get(name)
    if name == "conll":
        _check_conll_column(table, cfg)
    scheme = _scheme(table, cfg, layout)
    repair = cfg.invalid_tags == "repair"
    read = layout.columns(cfg)
    examples: list[tuple[int, InvalidTags | TagRowError, str]] = []  # (row, problem, action)
    counts = {"skipped": 0, "repaired": 0, "widened": 0}
    entity_counts: dict[str, int] = {}

    def fail(index: int, problem: TagRowError) -> DataError:
        fix = (SPANS_FIX if name == "spans" else TAGS_FIX) if isinstance(problem, InvalidTags) else BAD_ROW_FIX
        return DataError(f"{_where(table, index, name, problem.token)}: {problem.reason}", fix=fix)

    def note(index: int, problem: TagRowError, action: str) -> None:
        counts[action] += 1
        if len(examples) < EXAMPLES:
            examples.append((index, problem, action))

    def convert(batch: dict[str, list[Any]], indices: list[int]) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {column: [] for column in FEATURES}
        for j, index in enumerate(indices):
            try:
                converted = layout.convert({column: batch[column][j] for column in read}, cfg, scheme or "BIO",
                                           repair=repair)
            except InvalidTags as problem:  # only raised when not repairing
                raise fail(index, problem) from None
            except TagRowError as problem:
                if cfg.bad_rows == "error":
                    raise fail(index, problem) from None
                note(index, problem, "skipped")
                continue
            for problem in converted.repairs:
                note(index, problem, "repaired")
            counts["widened"] += converted.widened
            for tag in converted.row["tags"]:
                if tag.startswith("B-"):
                    entity_counts[tag[2:]] = entity_counts.get(tag[2:], 0) + 1
            for column, value in converted.row.items():
                out[column].append(value)
            out["row"].append(index)
        return out

    with quiet_datasets():
        dataset = table.dataset.select_columns(read).map(
            convert,
            batched=True,
            batch_size=BATCH,
            with_indices=True,
            remove_columns=read,
            features=FEATURES,
            # convert() counts repairs and skips as a side effect, so it must run every time; an explicit
            # fingerprint also spares datasets from hashing the closure (and the table inside it).
            load_from_cache_file=False,
            new_fingerprint=digest(table.dataset._fingerprint, name, read, scheme, cfg.conll_tag_column,
                                   cfg.invalid_tags, cfg.bad_rows, "tags-v1"),
        )
    shown = [{"where": _where(table, index, name, problem.token), "reason": problem.reason, "action": action}
             for index, problem, action in examples]
    _report(table, counts, shown)
    if dataset.num_rows == 0 and counts["skipped"]:
        # Skipping every row is almost always the wrong columns or scheme, not bad data.
        first = shown[0]  # no row was kept, so none was repaired: every example is a skipped row
        raise DataError(
            f"{table.name}: no usable rows, all {counts['skipped']} are malformed "
            f"(first: {first['where']}: {first['reason']})",
            fix="check data.tag_scheme and the column settings against the data, and fix the rows",
        )
    info = {"layout": name, "scheme": scheme, "rows": dataset.num_rows, **counts, "examples": shown,
            "entity_counts": dict(sorted(entity_counts.items()))}
    return dataset, info


def _report(table: Table, counts: dict[str, int], shown: list[dict[str, str]]) -> None:
    what = {"skipped": ("skipped %d malformed row(s)", "data.bad_rows: skip"),
            "repaired": ("made %d repair(s) to tags or spans", "data.invalid_tags: repair")}
    for action, (message, setting) in what.items():
        if counts[action]:
            first = next((e for e in shown if e["action"] == action), None)
            where = f"; first at {first['where']}: {first['reason']}" if first else ""
            logger.warning("%s: " + message + " (%s)%s", table.name, counts[action], setting, where)
