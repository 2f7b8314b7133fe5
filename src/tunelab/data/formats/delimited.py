"""Delimited text: CSV (.csv) and TSV (.tsv)."""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pa_csv

from tunelab.data.formats.base import CHUNK, EMPTY_FIX, FORMATS, DataFormat
from tunelab.errors import DataError

# Rows per pandas chunk in the datasets CSV builder: column types are inferred per chunk, so a
# value that changes a column's kind after the first chunk makes the whole load fail.
CSV_CHUNK_ROWS = 10_000

_INT = re.compile(r"\s*[+-]?\d+\s*")


def _csv_kind(value: str) -> str | None:
    """How pandas reads a field: None (empty -> null), 'int', 'float' or 'text'."""
    if value == "":
        return None
    if _INT.fullmatch(value):
        return "int"
    try:
        float(value)
    except ValueError:
        return "text"
    return "float"


def _fits(kind: str | None, value: str, column_kind: str | None) -> bool:
    """Whether pandas' value in a later chunk can be cast to the first chunk's column type."""
    if kind is None or column_kind == "text" or kind == "int":
        return True
    if kind == "float":
        return column_kind in ("float", None) or float(value).is_integer()
    return False  # text into a numeric (or all-empty, read as float) column


class CsvFormat(DataFormat):
    """Delimited text with a header line (pandas via the datasets CSV builder)."""

    builder = "csv"

    def __init__(self, name: str, extensions: tuple[str, ...], delimiter: str) -> None:
        self.name = name
        self.extensions = extensions
        self.delimiter = delimiter

    def builder_kwargs(self) -> dict[str, Any]:
        # Only empty fields are missing: pandas' default also turns "NA", "null", "None", "nan"
        # ... into nulls, which silently blanks real text and labels.
        return {"sep": self.delimiter, "keep_default_na": False, "na_values": [""], "chunksize": CSV_CHUNK_ROWS}

    def _records(self, file: Path, *, strict: bool = False) -> Iterator[tuple[int, list[str]]]:
        """(start line, fields) of each non-blank record, header included, as pandas counts them.

        strict=True raises _CsvSyntax on malformed quoting (only used to find unclosed quotes:
        pandas tolerates other quoting oddities such as `"a"b`).
        """
        with open(file, encoding="utf-8-sig", newline="") as f:
            reader = csv.reader(f, delimiter=self.delimiter, strict=strict)
            end = 0
            while True:
                start = end + 1
                try:
                    fields = next(reader)
                except StopIteration:
                    return
                except csv.Error as err:
                    raise _CsvSyntax(start, str(err)) from None
                end = reader.line_num
                if not fields or (len(fields) == 1 and not fields[0].strip()):
                    continue  # pandas skips blank and whitespace-only lines
                yield start, fields

    def precheck(self, file: Path, shown: str) -> None:
        # pandas pads rows with too FEW fields with nulls instead of failing; pyarrow's CSV reader
        # flags both cases at C speed, and the Python scan then names the line.
        header = next((fields for _, fields in self._records(file)), None)
        if not header:
            return
        bad = False

        def on_invalid(row: pa_csv.InvalidRow) -> str:
            nonlocal bad
            if row.text.strip():
                bad = True
                return "error"
            return "skip"

        try:
            reader = pa_csv.open_csv(
                file,
                read_options=pa_csv.ReadOptions(block_size=CHUNK),
                parse_options=pa_csv.ParseOptions(
                    delimiter=self.delimiter, newlines_in_values=True, invalid_row_handler=on_invalid
                ),
                convert_options=pa_csv.ConvertOptions(
                    column_types={name: pa.string() for name in header},
                    include_columns=[header[0]],
                    check_utf8=False,
                ),
            )
            for _ in reader:
                pass
        except (pa.ArrowInvalid, pa.ArrowKeyError, ValueError):
            bad = True
        if bad and (err := self.diagnose(file, shown)) is not None:
            raise err

    def locate(self, file: Path, row: int) -> str:
        for index, (start, _) in enumerate(self._records(file)):
            if index == row + 1:  # record 0 is the header
                return f"line {start}"
        raise IndexError(row)

    def diagnose(self, file: Path, shown: str) -> DataError | None:
        try:
            for _ in self._records(file, strict=True):
                pass
        except _CsvSyntax as err:
            if "unexpected end of data" in err.reason:
                return DataError(
                    f"{shown} line {err.line}: a quoted field starts here and is never closed",
                    fix='close the quote (write a quote inside a quoted value as "")',
                )
        return self._scan(file, shown)

    def _scan(self, file: Path, shown: str) -> DataError | None:
        header: list[str] | None = None
        first_kinds: dict[int, str | None] = {}
        row = -1
        for start, fields in self._records(file):
            if header is None:
                header = fields
                continue
            row += 1
            if len(fields) != len(header):
                return self._field_count_error(shown, start, len(fields), len(header))
            if problem := self._kind_problem(header, fields, row, first_kinds):
                return DataError(f"{shown} line {start}: {problem}", fix="make the column all text or all numbers")
        if header is None or row < 0:
            what = "a header line but no rows" if header else "no rows"
            return DataError(f"{shown}: {what}", fix=EMPTY_FIX)
        return None

    def _field_count_error(self, shown: str, line: int, got: int, want: int) -> DataError:
        sep = "tab" if self.delimiter == "\t" else repr(self.delimiter)
        return DataError(
            f"{shown} line {line}: {got} field{'s' if got != 1 else ''} where the header has {want}",
            fix=f"give every row {want} fields; quote values that contain a {sep}",
        )

    @staticmethod
    def _kind_problem(
        header: list[str], fields: list[str], row: int, first_kinds: dict[int, str | None]
    ) -> str | None:
        """Mirror pandas' per-chunk type inference: chunk 1 fixes each column's type."""
        order = {None: 0, "int": 1, "float": 2, "text": 3}
        for i, value in enumerate(fields):
            kind = _csv_kind(value)
            if row < CSV_CHUNK_ROWS:
                if order[kind] > order[first_kinds.get(i)]:
                    first_kinds[i] = kind
            elif not _fits(kind, value, first_kinds.get(i)):
                held = "numbers" if first_kinds.get(i) else "empty fields"
                return (
                    f"column {header[i]!r} holds {value!r}, but the first {CSV_CHUNK_ROWS:,} rows hold only {held}"
                )
        return None


class _CsvSyntax(Exception):
    def __init__(self, line: int, reason: str) -> None:
        super().__init__(reason)
        self.line = line
        self.reason = reason




FORMATS.register("csv")(CsvFormat("csv", (".csv",), ","))
FORMATS.register("tsv")(CsvFormat("tsv", (".tsv",), "\t"))
