"""CoNLL token files (.conll, .bio, .iob): one token per line, a blank line between sentences.

Each token line holds whitespace-separated fields (spaces or tabs); field 0 is the token and one
of the others its tag (`data.conll_tag_column`, default -1: the last). The format does not see the
config, so every row keeps ALL fields and the token-classification normalizer picks the tag:

    {"tokens": ["Started", "metformin"], "fields": [["Started", "metformin"], ["O", "B-DRUG"]]}

`fields[k]` is field k of every token line of the sentence (fields[0] == tokens), so k is the
number a user counts in the file. Lines starting with `-DOCSTART-` (document markers of
CoNLL-2003) end any open sentence and are skipped, like the blank line after them. Every token
line of a file must have the same number of fields, at least two: a different count almost always
means a missing tag or a token that contains a space, and it would make "the tag column" mean
different things on different lines.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import datasets

from tunelab.data.formats.base import EMPTY_FIX, FORMATS, DataFormat, quiet_datasets
from tunelab.errors import DataError

DOCSTART = "-DOCSTART-"
PARSER_VERSION = "conll-v1"  # part of the Arrow cache key: bump when parsing changes
_SEPARATORS = re.compile(r"[ \t]+")  # not str.split(): it also splits on no-break spaces inside tokens

FEATURES = datasets.Features({
    "tokens": datasets.Sequence(datasets.Value("string")),
    "fields": datasets.Sequence(datasets.Sequence(datasets.Value("string"))),
})


class ConllSyntax(Exception):
    """A line that is not a valid token line; `line` is its physical line number."""

    def __init__(self, line: int, reason: str, fix: str) -> None:
        super().__init__(f"line {line}: {reason}")
        self.line = line
        self.reason = reason
        self.fix = fix


def sentences(file: Path) -> Iterator[tuple[int, list[list[str]]]]:
    """(physical line of the first token, the fields of each token line) of every sentence.

    Raises ConllSyntax at the first line with fewer than two fields or a field count that differs
    from the file's first token line.
    """
    first: tuple[int, int] | None = None  # (line, field count) of the file's first token line
    start, lines = 0, []
    # Text mode with universal newlines: line numbers match an editor's for \n, \r\n and \r files.
    with open(file, encoding="utf-8-sig") as handle:
        for number, line in enumerate(handle, 1):
            text = line.strip(" \t\r\n")
            if not text or text.startswith(DOCSTART):
                if lines:
                    yield start, lines
                start, lines = 0, []
                continue
            fields = _SEPARATORS.split(text)
            first = first or (number, len(fields))
            _check_fields(fields, number, first)
            if not lines:
                start = number
            lines.append(fields)
    if lines:
        yield start, lines


def _check_fields(fields: list[str], number: int, first: tuple[int, int]) -> None:
    if len(fields) == 1:
        raise ConllSyntax(
            number, f"one field ({fields[0]!r}) where a token line needs the token and its tag",
            "separate the token and its tag with a space or tab, and sentences with a blank line",
        )
    if len(fields) != first[1]:
        raise ConllSyntax(
            number, f"{len(fields)} fields where line {first[0]} has {first[1]}",
            "give every token line the same fields (a token cannot contain a space)",
        )


def _generate(path: str) -> Iterator[dict[str, list]]:
    """Rows for Dataset.from_generator; module-level so datasets can pickle it."""
    for _, lines in sentences(Path(path)):
        yield {"tokens": [f[0] for f in lines], "fields": [list(column) for column in zip(*lines, strict=True)]}


class ConllFormat(DataFormat):
    """One sentence per row: {"tokens": [...], "fields": [[field k of each token] for each k]}."""

    name = "conll"
    extensions = (".conll", ".bio", ".iob")

    def load(self, file: Path, *, cache: Path, version: str) -> datasets.Dataset:
        # Sentences stream from the generator to Arrow on disk (memory-mapped, never all in memory).
        # The fingerprint names the cache entry by content hash + parser version, so an edited file
        # is re-read even when its mtime is unchanged (as for the other formats).
        with quiet_datasets():
            return datasets.Dataset.from_generator(
                _generate,
                features=FEATURES,
                gen_kwargs={"path": str(file.resolve())},
                cache_dir=str(cache),
                fingerprint=f"{PARSER_VERSION}-{version}",
            )

    def locate(self, file: Path, row: int) -> str:
        for index, (start, _) in enumerate(sentences(file)):
            if index == row:
                return f"line {start}"
        raise IndexError(row)

    def diagnose(self, file: Path, shown: str) -> DataError | None:
        count = 0
        try:
            for _ in sentences(file):
                count += 1
        except ConllSyntax as err:
            return DataError(f"{shown} line {err.line}: {err.reason}", fix=err.fix)
        if count == 0:
            return DataError(f"{shown}: no sentences (only blank and {DOCSTART} lines)", fix=EMPTY_FIX)
        return None


FORMATS.register("conll")(ConllFormat())
