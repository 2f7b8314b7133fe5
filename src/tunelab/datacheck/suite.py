"""Run every data check over the loaded splits and build one JSON-able report.

Why one report: the same facts feed the CLI summary, the HTML page, the run record and the
promotion policy (`require_data_check`, `require_pii_clean`), so they are computed once, here, from
plain rows, without knowing where the rows came from (files, a dataset version, a test).

Errors (the report does not pass): a split that failed to load or has no rows, empty rows, exact
leakage from train into validation/test, a train column missing from another split, labels in
validation/test that train never shows. Warnings: near leakage, duplicates within a split, label
imbalance above 10:1 in train, more than 5% of rows truncated at max_length, encoding problems.
PII findings are reported under "pii" only: what they mean (block, redact, warn) is the caller's call.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Collection
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from tunelab.config.schema import GovernanceConfig
from tunelab.datacheck import duplicates as dup
from tunelab.datacheck.pii import iter_strings, scan_rows

MAX_EXAMPLES = 20  # locations listed per finding, so reports stay small
MAX_PII_FINDINGS = 200
IMBALANCE_RATIO = 10.0
TRUNCATION_RATE = 0.05
TOKENIZE_BATCH = 512
SPLIT_ORDER = ("train", "validation", "test")
_ROLE_KEYS = (".role", ".from")  # chat turns: who speaks is structure, not text


@dataclass
class SplitData:
    """One split's rows as plain dicts, how to name a row's location, or why it could not be loaded."""

    rows: list[dict]
    where: Callable[[int], str] | None = None
    load_error: str | None = None


class _Locator:
    """`where(row)` with a cache and a fallback ("train row 5"): locating a row may re-read its file."""

    def __init__(self, split: str, where: Callable[[int], str] | None) -> None:
        self.split, self.where, self.cache = split, where, {}

    def __call__(self, row: int) -> str:
        if row not in self.cache:
            try:
                self.cache[row] = self.where(row) if self.where else f"{self.split} row {row + 1}"
            except (IndexError, OSError, ValueError):
                self.cache[row] = f"{self.split} row {row + 1}"
        return self.cache[row]


class _Findings:
    """The errors and warnings collected while checking, one line each."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.warnings: list[str] = []


def row_text(row: dict, skip: Collection[str] = ()) -> str:
    """Every string of the row, recursively and in order, joined by newlines; top-level `skip` columns
    and chat roles excepted. This is the text duplicates, leakage and lengths are measured on."""
    parts = []
    for key, value in row.items():
        if key in skip:
            continue
        parts.extend(text for path, text in iter_strings(value, str(key)) if not path.endswith(_ROLE_KEYS))
    return "\n".join(parts)


def check_splits(
    splits: dict[str, SplitData],
    *,
    label_column: str | None,
    label_delimiter: str | None = None,
    text_rows: bool = True,
    tokenizer: Any = None,
    max_length: int | None = None,
    governance: GovernanceConfig,
    ignore_columns: Collection[str] = (),
    drop_empty: bool = False,
) -> dict:
    """Check `splits` (train first) and return the report (see the module docstring for what fails it).

    `text_rows: False` (image tasks: rows are a label and a path) skips empty-text and length checks.
    `ignore_columns` are left out of the row text besides the label (token tags, entity spans).
    `tokenizer` and `max_length`, when given, add token lengths and the truncation rate, measured on the
    row text with the tokenizer's special tokens (an estimate for chat rows: no chat template is applied).
    `drop_empty` (data.empty_text: drop) makes empty rows a warning: the user chose to drop them.
    `label_delimiter` splits a string label into several (multi-label rows written "a,b").
    """
    found = _Findings()
    order = sorted(splits, key=lambda s: SPLIT_ORDER.index(s) if s in SPLIT_ORDER else len(SPLIT_ORDER))
    loaded: dict[str, SplitData] = {}
    for name in order:
        if splits[name].load_error is not None:
            found.errors.append(f"{name}: {splits[name].load_error}")
        else:
            loaded[name] = splits[name]
    skip = {*ignore_columns, *([label_column] if label_column else [])}
    locators = {name: _Locator(name, data.where) for name, data in loaded.items()}
    texts = {name: [row_text(row, skip) for row in data.rows] for name, data in loaded.items()}
    indexes = {name: dup.TextIndex.build(texts[name]) for name in loaded}
    report_splits = {}
    for name, data in loaded.items():
        report_splits[name] = _split_section(
            name, data.rows, texts[name], indexes[name], locators[name], found,
            label_column=label_column, label_delimiter=label_delimiter, tokenizer=tokenizer if text_rows else None,
            max_length=max_length,
            check_empty=text_rows, drop_empty=drop_empty, threshold=governance.near_duplicate_threshold,
        )
    _label_coverage(report_splits, locators, loaded, label_column, label_delimiter, found)
    schema = _schema_section(loaded, found, label_column)
    leaks = _leakage_section(indexes, locators, governance.near_duplicate_threshold, found)
    pii = _pii_section(loaded, locators, label_column, governance)
    passed = not found.errors
    return {
        "passed": passed,
        "errors": found.errors,
        "warnings": found.warnings,
        "splits": report_splits,
        "schema": schema,
        "leakage": leaks,
        "pii": pii,
        "summary": _summary(passed, found, report_splits, leaks, pii),
    }


# --------------------------------------------------------------------------- one split

def _split_section(
    name: str, rows: list[dict], texts: list[str], index: dup.TextIndex, locate: _Locator, found: _Findings, *,
    label_column: str | None, label_delimiter: str | None, tokenizer: Any, max_length: int | None,
    check_empty: bool, drop_empty: bool, threshold: float,
) -> dict:
    if not rows:
        found.errors.append(f"{name}: no rows")
    empty = [i for i, text in enumerate(texts) if not text.strip()] if check_empty else []
    if empty:
        what = f"{name}: {len(empty)} empty or whitespace-only row(s), e.g. {_some(empty, locate)}"
        (found.warnings if drop_empty else found.errors).append(
            what + (" (dropped: data.empty_text: drop)" if drop_empty else ""))
    exact = dup.exact_groups(index)
    near = dup.near_groups(index, threshold)
    _warn_groups(found, name, "exact duplicate", exact, locate)
    _warn_groups(found, name, f"near-duplicate (Jaccard >= {threshold:g})", near, locate, joiner=" ~ ")
    labels = _label_counts(rows, label_column, label_delimiter)
    ratio = _imbalance(labels)
    if name == "train" and ratio is not None and ratio > IMBALANCE_RATIO:
        most, least = max(labels, key=labels.get), min(labels, key=labels.get)
        found.warnings.append(f"{name}: labels are imbalanced {ratio:.1f}:1 ({most!r}: {labels[most]} rows, "
                              f"{least!r}: {labels[least]})")
    encoding = _encoding_problems(rows, locate)
    if encoding:
        found.warnings.append(f"{name}: {len(encoding)} encoding problem(s), e.g. {encoding[0]['where']} "
                              f"{encoding[0]['field']}: {encoding[0]['problem']}")
    return {
        "rows": len(rows),
        "empty_rows": [locate(i) for i in empty[:MAX_EXAMPLES]],
        "empty_count": len(empty),
        "exact_duplicates": _groups_section(exact, locate),
        "near_duplicates": _groups_section(near, locate),
        "labels": labels,
        "imbalance_ratio": ratio,
        "lengths": {"chars": _percentiles([len(t) for t in texts]),
                    "tokens": _token_lengths(name, texts, tokenizer, max_length, locate, found)},
        "encoding": encoding[:MAX_EXAMPLES],
        "encoding_count": len(encoding),
    }


def _some(rows: list[int], locate: _Locator, n: int = 3) -> str:
    shown = ", ".join(locate(i) for i in rows[:n])
    return shown + (f" (+{len(rows) - n} more)" if len(rows) > n else "")


def _groups_section(groups: list[list[int]], locate: _Locator) -> dict:
    """{"groups", "rows" (redundant rows: all but one per group), "examples": [[locations]]}."""
    return {
        "groups": len(groups),
        "rows": sum(len(g) - 1 for g in groups),
        "examples": [[locate(i) for i in g[:5]] for g in groups[:MAX_EXAMPLES]],
    }


def _warn_groups(
    found: _Findings, name: str, kind: str, groups: list[list[int]], locate: _Locator, joiner: str = " = "
) -> None:
    if groups:
        redundant = sum(len(g) - 1 for g in groups)
        found.warnings.append(f"{name}: {len(groups)} {kind} group(s) ({redundant} redundant row(s)), "
                              f"e.g. {joiner.join(locate(i) for i in groups[0][:3])}")


def _label_values(value: Any, delimiter: str | None = None) -> list[str]:
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    if delimiter is not None and isinstance(value, str):
        return [part.strip() for part in value.split(delimiter) if part.strip()]
    return ["null" if value is None else str(value)]


def _label_counts(rows: list[dict], label_column: str | None, delimiter: str | None) -> dict[str, int] | None:
    if not label_column or not rows or not any(label_column in row for row in rows):
        return None
    counts = Counter(label for row in rows for label in _label_values(row.get(label_column), delimiter))
    return dict(sorted(counts.items()))


def _imbalance(labels: dict[str, int] | None) -> float | None:
    if not labels or len(labels) < 2:
        return None
    return round(max(labels.values()) / min(labels.values()), 3)


def _label_coverage(
    sections: dict, locators: dict[str, _Locator], loaded: dict[str, SplitData], label_column: str | None,
    delimiter: str | None, found: _Findings,
) -> None:
    """Labels of validation/test that train never shows: the model cannot predict them."""
    train = sections.get("train", {}).get("labels")
    if label_column and "train" in sections and train is None and loaded["train"].rows:
        found.errors.append(f"train: label column {label_column!r} not found")
        return
    for name, section in sections.items():
        if name == "train" or train is None or not section["labels"]:
            continue
        unseen = sorted(set(section["labels"]) - set(train))
        if unseen:
            rows = [i for i, row in enumerate(loaded[name].rows)
                    if set(_label_values(row.get(label_column), delimiter)) & set(unseen)]
            shown = ", ".join(repr(label) for label in unseen[:5])
            found.errors.append(f"{name}: label(s) {shown} never occur in train, e.g. {_some(rows, locators[name])}")


def _percentiles(values: list[int]) -> dict[str, float] | None:
    if not values:
        return None
    array = np.asarray(values)
    p50, p95 = (round(float(np.percentile(array, q)), 1) for q in (50, 95))
    return {"p50": p50, "p95": p95, "max": int(array.max())}


def _token_lengths(
    name: str, texts: list[str], tokenizer: Any, max_length: int | None, locate: _Locator, found: _Findings,
) -> dict | None:
    """Token counts as the tokenizer sees each row text (special tokens included), and truncation."""
    if tokenizer is None or not texts:
        return None
    counts: list[int] = []
    for start in range(0, len(texts), TOKENIZE_BATCH):
        batch = texts[start:start + TOKENIZE_BATCH]
        counts.extend(len(ids) for ids in tokenizer(batch, truncation=False, verbose=False)["input_ids"])
    section: dict[str, Any] = dict(_percentiles(counts) or {})
    if max_length is not None:
        long_rows = [i for i, n in enumerate(counts) if n > max_length]
        rate = len(long_rows) / len(counts)
        section.update(max_length=max_length, truncated=len(long_rows), truncation_rate=round(rate, 4),
                       examples=[locate(i) for i in long_rows[:MAX_EXAMPLES]])
        if rate > TRUNCATION_RATE:
            found.warnings.append(f"{name}: {rate:.1%} of rows ({len(long_rows)}) are longer than max_length "
                                  f"({max_length} tokens) and will be truncated, e.g. {_some(long_rows, locate)}")
    return section


# --------------------------------------------------------------------------- encoding

_SUSPECT = re.compile("[\ufffd\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u00c2-\u00f4]")
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_LEAD = re.compile("[\u00c2-\u00f4]")


def _cp1252_bytes(text: str) -> bytes | None:
    """The bytes a cp1252 (or Latin-1) decoder turned into `text`; None when it cannot have."""
    out = bytearray()
    for ch in text:
        try:
            out += ch.encode("cp1252")
        except UnicodeEncodeError:
            if ord(ch) > 0xFF:
                return None
            out.append(ord(ch))
    return bytes(out)


def mojibake(text: str) -> list[str]:
    """Sequences that are UTF-8 bytes decoded as cp1252/Latin-1 ('Ã©' for 'é', 'â€™' for '’')."""
    found = []
    for m in _LEAD.finditer(text):
        lead = ord(m.group())
        size = 2 if lead < 0xE0 else 3 if lead < 0xF0 else 4
        sequence = text[m.start():m.start() + size]
        raw = _cp1252_bytes(sequence)
        if raw is None or len(raw) != size:
            continue
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            continue
        found.append(sequence)
    return found


def string_problems(text: str) -> list[str]:
    """What is wrong with the characters of one string (empty when nothing is)."""
    if not _SUSPECT.search(text):
        return []
    problems = []
    if "\ufffd" in text:
        problems.append(f"{text.count(chr(0xFFFD))} U+FFFD replacement character(s) (bytes lost when decoding)")
    controls = _CONTROL.findall(text)
    if controls:
        codes = ", ".join(sorted({f"U+{ord(c):04X}" for c in controls})[:3])
        problems.append(f"{len(controls)} NUL/control character(s) ({codes})")
    sequences = mojibake(text)
    if sequences:
        fixed = _cp1252_bytes(sequences[0]).decode("utf-8")  # type: ignore[union-attr]
        problems.append(f"mojibake {sequences[0]!r} (UTF-8 read as Latin-1/cp1252; meant {fixed!r}), "
                        f"{len(sequences)} sequence(s)")
    return problems


def _encoding_problems(rows: list[dict], locate: _Locator) -> list[dict]:
    problems = []
    for i, row in enumerate(rows):
        for field, text in iter_strings(row):
            for problem in string_problems(text):
                where = locate(i) if len(problems) < MAX_EXAMPLES else f"{locate.split} row {i + 1}"
                problems.append({"row": i, "where": where, "field": field, "problem": problem})
    return problems


# --------------------------------------------------------------------------- schema, leakage, PII

def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    for kind, name in ((bool, "bool"), (int, "int"), (float, "float"), (str, "string"), (list, "list"),
                       (dict, "dict")):
        if isinstance(value, kind):
            return name
    return type(value).__name__


def _columns(rows: list[dict]) -> dict[str, str]:
    kinds: dict[str, set[str]] = {}
    for row in rows:
        for key, value in row.items():
            kinds.setdefault(key, set()).add(_type_name(value))
    return {key: "|".join(sorted(names)) for key, names in kinds.items()}


def _schema_section(loaded: dict[str, SplitData], found: _Findings, label_column: str | None) -> dict:
    """Columns and value types per split; the label column missing elsewhere is an error, other train
    columns missing or extra columns warn (a split may use another format the task reads, as token
    tags beside spans; the task itself names a column it needs and cannot find)."""
    schema = {name: {"columns": _columns(data.rows)} for name, data in loaded.items()}
    if "train" not in schema:
        return schema
    train = schema["train"]["columns"]
    for name, section in schema.items():
        if name == "train":
            continue
        mine = section["columns"]
        section["missing"] = sorted(set(train) - set(mine))
        section["extra"] = sorted(set(mine) - set(train))
        section["type_mismatch"] = {c: {"train": train[c], name: mine[c]} for c in sorted(set(train) & set(mine))
                                    if not _types_agree(train[c], mine[c])}
        if section["missing"]:
            where = found.errors if label_column in section["missing"] else found.warnings
            where.append(f"{name}: column(s) {', '.join(map(repr, section['missing']))} of train are missing "
                         f"(columns: {', '.join(mine)})")
        if section["extra"]:
            found.warnings.append(f"{name}: column(s) {', '.join(map(repr, section['extra']))} are not in train")
        for column, types in section["type_mismatch"].items():
            found.warnings.append(f"{name}: column {column!r} holds {types[name]} values but train holds {types['train']}")
    return schema


def _types_agree(a: str, b: str) -> bool:
    real_a, real_b = set(a.split("|")) - {"null"}, set(b.split("|")) - {"null"}
    return not real_a or not real_b or real_a == real_b


def _leakage_section(
    indexes: dict[str, dup.TextIndex], locators: dict[str, _Locator], threshold: float, found: _Findings,
) -> list[dict]:
    """Rows of a later split that also occur in an earlier one (train->validation, train->test, validation->test)."""
    names = list(indexes)
    section = []
    for ai, a in enumerate(names):
        for b in names[ai + 1:]:
            leak = dup.leakage(indexes[a], indexes[b], threshold)
            examples = [{"a_where": locators[a](i), "b_where": locators[b](j), "kind": "exact", "similarity": 1.0}
                        for i, j in leak.exact[:MAX_EXAMPLES]]
            room = MAX_EXAMPLES - len(examples)
            examples += [{"a_where": locators[a](i), "b_where": locators[b](j), "kind": "near",
                          "similarity": round(sim, 3)} for i, j, sim in leak.near[:max(room, 0)]]
            section.append({"a": a, "b": b, "exact": len(leak.exact), "near": len(leak.near), "examples": examples})
            _report_leak(found, a, b, leak, locators, threshold)
    return section


def _report_leak(found: _Findings, a: str, b: str, leak: dup.Leakage, locators: dict[str, _Locator],
                 threshold: float) -> None:
    if leak.exact:
        i, j = leak.exact[0]
        line = (f"{b}: {len(leak.exact)} row(s) also in {a} (exact leakage), e.g. {locators[b](j)} = "
                f"{locators[a](i)}")
        (found.errors if a == "train" else found.warnings).append(line)
    if leak.near:
        i, j, sim = leak.near[0]
        found.warnings.append(f"{b}: {len(leak.near)} row(s) nearly the same as a row of {a} (Jaccard >= "
                              f"{threshold:g}), e.g. {locators[b](j)} ~ {locators[a](i)} ({sim:.2f})")


def _pii_section(
    loaded: dict[str, SplitData], locators: dict[str, _Locator], label_column: str | None,
    governance: GovernanceConfig,
) -> dict:
    if governance.pii == "off":
        return {"enabled": False, "mode": "off", "count": 0, "by_entity": {}, "by_split": {}, "findings": [],
                "truncated": False}
    findings = []
    for name, data in loaded.items():
        findings += scan_rows(
            data.rows, split=name, entities=list(governance.pii_entities), where=locators[name],
            skip_fields={label_column} if label_column else set(), presidio=governance.presidio,
            max_located=MAX_PII_FINDINGS,
        )
    return {
        "enabled": True,
        "mode": governance.pii,
        "count": len(findings),
        "by_entity": dict(sorted(Counter(f.entity for f in findings).items())),
        "by_split": dict(Counter(f.split for f in findings)),
        "rows": len({(f.split, f.row) for f in findings}),
        "findings": [asdict(f) for f in findings[:MAX_PII_FINDINGS]],
        "truncated": len(findings) > MAX_PII_FINDINGS,
    }


def _summary(passed: bool, found: _Findings, splits: dict, leaks: list[dict], pii: dict) -> dict:
    return {
        "passed": passed,
        "errors": len(found.errors),
        "warnings": len(found.warnings),
        "rows": {name: section["rows"] for name, section in splits.items()},
        "empty_rows": sum(s["empty_count"] for s in splits.values()),
        "exact_duplicate_rows": sum(s["exact_duplicates"]["rows"] for s in splits.values()),
        "near_duplicate_rows": sum(s["near_duplicates"]["rows"] for s in splits.values()),
        "leaked_rows": {f"{leak['a']}->{leak['b']}": leak["exact"] + leak["near"] for leak in leaks},
        "pii_findings": pii["count"],
    }
