"""Data file formats: one registry entry per format.

Each format knows how to load one file into a `datasets.Dataset` (through the `datasets` builders,
so the result is Arrow and memory-mapped), how to check a file cheaply before loading, how to find
the physical line of a row, and how to DIAGNOSE a failed load: scan the file for the first bad
line and say what is wrong. The scanners are pure Python and only run on error paths (or, for
`where()`, when a message needs a line number).
"""

from __future__ import annotations

import codecs
import csv
import glob
import hashlib
import json
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import datasets
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from tunelab.errors import DataError
from tunelab.registry import Registry

logger = logging.getLogger(__name__)

CHUNK = 1 << 20
# Rows per pandas chunk in the datasets CSV builder: column types are inferred per chunk, so a
# value that changes a column's kind after the first chunk makes the whole load fail.
CSV_CHUNK_ROWS = 10_000
_BOM = codecs.BOM_UTF8
EMPTY_FIX = "add rows to it or point the config at another file"


class DataFormat:
    """One file format: load, check, locate rows, diagnose failures."""

    name: str = ""
    extensions: tuple[str, ...] = ()
    builder: str = ""
    text: bool = True  # text formats are checked for UTF-8 before loading

    def builder_kwargs(self) -> dict[str, Any]:
        return {}

    def load(self, file: Path, *, cache: Path, version: str) -> datasets.Dataset:
        """Load one file with the `datasets` builder; `version` (content hash) keys its Arrow cache.

        datasets fingerprints local files by path + mtime only, so an in-place edit that keeps the
        mtime would be served stale; naming the builder config after the content hash prevents it.
        """
        with quiet_datasets():
            return datasets.load_dataset(
                self.builder,
                name=version,
                data_files=glob.escape(str(file.resolve())),  # datasets globs data_files
                split="train",
                cache_dir=str(cache),
                **self.builder_kwargs(),
            )

    def precheck(self, file: Path, shown: str) -> None:
        """Cheap format-specific checks before loading (UTF-8 and emptiness are checked elsewhere)."""

    def diagnose(self, file: Path, shown: str) -> DataError | None:
        """Scan `file` for the first problem that makes it unloadable; None when nothing is found."""
        return None

    def locate(self, file: Path, row: int) -> str:
        """Where row `row` (0-based, within this file) is: 'line 17' or 'row 12'."""
        return f"row {row + 1}"


FORMATS: Registry[DataFormat] = Registry("data format")


def format_for_extension(path: Path) -> DataFormat | None:
    """The format whose extensions include `path`'s suffix (case-insensitive), if any."""
    suffix = path.suffix.lower()
    for _, fmt in FORMATS.items():
        if suffix in fmt.extensions:
            return fmt
    return None


@contextmanager
def quiet_datasets() -> Iterator[None]:
    """Silence datasets' own error logs and progress bars: we report failures in one line."""
    packaged = logging.getLogger("datasets.packaged_modules")
    level = packaged.level
    bars_off = datasets.utils.are_progress_bars_disabled()
    packaged.setLevel(logging.CRITICAL)
    datasets.utils.disable_progress_bars()
    try:
        yield
    finally:
        packaged.setLevel(level)
        if not bars_off:
            datasets.utils.enable_progress_bars()


# --------------------------------------------------------------------------- whole-file checks


def check_file(file: Path, shown: str, *, text: bool) -> str:
    """Stream `file` once: return its sha256; raise DataError if it is empty or (text) not UTF-8."""
    sha = hashlib.sha256()
    has_content = False
    valid = True
    carry = b""
    with open(file, "rb") as f:
        while chunk := f.read(CHUNK):
            sha.update(chunk)
            if not has_content and not chunk.isspace():
                has_content = True
            if text and valid:
                carry, valid = _utf8_feed(carry + chunk)
    if text and valid and carry:
        valid = False  # truncated multi-byte sequence at the end of the file
    if not has_content:
        raise DataError(f"{shown}: the file is empty", fix=EMPTY_FIX)
    if not valid:
        raise utf8_error(file, shown)
    return sha.hexdigest()


def _utf8_feed(buf: bytes) -> tuple[bytes, bool]:
    """Validate `buf`; return (incomplete tail to prepend to the next chunk, valid so far)."""
    try:
        buf.decode("utf-8")
        return b"", True
    except UnicodeDecodeError as err:
        if err.reason == "unexpected end of data" and err.end == len(buf) and len(buf) - err.start < 4:
            return buf[err.start :], True
        return b"", False


def utf8_error(file: Path, shown: str) -> DataError:
    """The DataError for the first line of `file` that is not valid UTF-8 (slow path)."""
    with open(file, "rb") as f:
        for lineno, line in enumerate(f, 1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as err:
                column = len(line[: err.start].decode("utf-8")) + 1
                byte = line[err.start]
                return DataError(
                    f"{shown} line {lineno}: bytes that are not UTF-8 (0x{byte:02x} at column {column})",
                    fix="re-save the file as UTF-8",
                )
    return DataError(f"{shown}: bytes that are not UTF-8", fix="re-save the file as UTF-8")


def root_message(exc: BaseException) -> str:
    """First line of the innermost cause of `exc` (datasets wraps the useful error)."""
    seen = {id(exc)}
    while True:
        inner = exc.__cause__ or exc.__context__
        if inner is None or id(inner) in seen:
            break
        seen.add(id(inner))
        exc = inner
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


# --------------------------------------------------------------------------- JSON / JSON Lines


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def _json_kind(value: object) -> str | None:
    """The JSON type name arrow cares about; ints and floats are both numbers (arrow promotes)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _article(kind: str) -> str:
    return f"an {kind}" if kind[0] in "aeiou" else f"a {kind}"


class _TypeTracker:
    """Remembers each column's first JSON type and where it was seen."""

    def __init__(self) -> None:
        self.seen: dict[str, tuple[str, str]] = {}

    def conflict(self, record: dict[str, Any], where: str) -> str | None:
        for column, value in record.items():
            kind = _json_kind(value)
            if kind is None:
                continue
            first = self.seen.setdefault(column, (kind, where))
            if first[0] != kind:
                return f"column {column!r} holds {_article(kind)} here but {_article(first[0])} on {first[1]}"
        return None


def _is_json_array(file: Path) -> bool:
    with open(file, "rb") as f:
        head = f.read(4096)
    return head.removeprefix(_BOM).lstrip().startswith(b"[")


def _skip_ws(text: str, i: int) -> int:
    while i < len(text) and text[i] in " \t\r\n":
        i += 1
    return i


def _array_items(text: str) -> Iterator[tuple[Any, int]]:
    """Yield (item, start offset) of a top-level JSON array; raises JSONDecodeError / ValueError."""
    i = _skip_ws(text, 0) + 1  # past "["
    i = _skip_ws(text, i)
    if i < len(text) and text[i] == "]":
        i = _skip_ws(text, i + 1)
    else:
        while True:
            item, end = _DECODER.raw_decode(text, i)
            yield item, i
            i = _skip_ws(text, end)
            if i < len(text) and text[i] == ",":
                i = _skip_ws(text, i + 1)
            elif i < len(text) and text[i] == "]":
                i = _skip_ws(text, i + 1)
                break
            else:
                raise json.JSONDecodeError("Expecting ',' delimiter", text, i)
    if i < len(text):
        raise json.JSONDecodeError("Extra data", text, i)


def _lines_with_content(file: Path) -> Iterator[tuple[int, bytes]]:
    """(physical line number, line) for non-blank lines, as pyarrow's JSON reader counts records."""
    with open(file, "rb") as f:
        for lineno, line in enumerate(f, 1):
            if lineno == 1:
                line = line.removeprefix(_BOM)
            if line.strip():
                yield lineno, line


class JsonFormat(DataFormat):
    """JSON Lines (one object per line) or, for .json, also a top-level array of objects."""

    builder = "json"

    def __init__(self, name: str, extensions: tuple[str, ...]) -> None:
        self.name = name
        self.extensions = extensions

    def builder_kwargs(self) -> dict[str, Any]:
        # on_mixed_types=None: datasets' default silently turns a column whose type changes between
        # rows (1 vs "pos") into an opaque Json column; we want an error naming the line instead.
        # parse_agent_traces=False: never reinterpret user rows as agent-trace schemas.
        return {"on_mixed_types": None, "parse_agent_traces": False}

    def precheck(self, file: Path, shown: str) -> None:
        if _is_json_array(file):
            # datasets reads an array whose first item is not an object as a column named "text".
            with open(file, "rb") as f:
                head = f.read(4096).removeprefix(_BOM).lstrip()[1:].lstrip()
            ok = not head or head[:1] in (b"{", b"]")
        else:
            # When the first line is not JSON, datasets falls back to pandas.read_json on the whole
            # file, which turns a pretty-printed object into rows that match no line.
            first = next(_lines_with_content(file), (0, b""))[1]
            try:
                _DECODER.decode(first.decode("utf-8"))
                ok = True
            except ValueError:
                ok = False
        if not ok:
            raise self.diagnose(file, shown) or DataError(
                f"{shown}: not JSON Lines or a JSON array of objects",
                fix='write one object per line, like {"text": ..., "label": ...}',
            )

    def locate(self, file: Path, row: int) -> str:
        if _is_json_array(file):
            text = file.read_text(encoding="utf-8-sig")
            for index, (_, offset) in enumerate(_array_items(text)):
                if index == row:
                    return f"line {text.count(chr(10), 0, offset) + 1}"
            raise IndexError(row)
        for index, (lineno, _) in enumerate(_lines_with_content(file)):
            if index == row:
                return f"line {lineno}"
        raise IndexError(row)

    def diagnose(self, file: Path, shown: str) -> DataError | None:
        if _is_json_array(file):
            return self._diagnose_array(file, shown)
        return self._diagnose_lines(file, shown)

    def _diagnose_lines(self, file: Path, shown: str) -> DataError | None:
        types = _TypeTracker()
        rows = 0
        for lineno, line in _lines_with_content(file):
            line = line.rstrip(b"\r\n")
            try:
                record = _DECODER.decode(line.decode("utf-8"))
            except json.JSONDecodeError as err:
                if rows == 0 and (whole := self._whole_document(file, shown)) is not None:
                    return whole
                return DataError(
                    f"{shown} line {lineno}: invalid JSON ({err.msg} at column {err.colno})",
                    fix="fix or remove that line",
                )
            except ValueError as err:
                return DataError(f"{shown} line {lineno}: invalid JSON ({err})", fix="fix or remove that line")
            if not isinstance(record, dict):
                return DataError(
                    f"{shown} line {lineno}: {_article(_json_kind(record) or 'null')} where a JSON object was expected",
                    fix='write one object per line, like {"text": ..., "label": ...}',
                )
            if problem := types.conflict(record, f"line {lineno}"):
                return DataError(f"{shown} line {lineno}: {problem}", fix="give every value in a column the same type")
            rows += 1
        if rows == 0:
            return DataError(f"{shown}: no rows", fix=EMPTY_FIX)
        return None

    @staticmethod
    def _whole_document(file: Path, shown: str, limit: int = 256 << 20) -> DataError | None:
        """The error for a file that is one (pretty-printed) JSON value rather than JSON Lines."""
        if file.stat().st_size > limit:
            return None
        try:
            value = _DECODER.decode(file.read_text(encoding="utf-8-sig"))
        except ValueError:
            return None
        return DataError(
            f"{shown}: the file is one JSON {_json_kind(value)} spread over several lines, not one object per line",
            fix="write one JSON object per line (JSON Lines), or a JSON array of objects in a .json file",
        )

    def _diagnose_array(self, file: Path, shown: str) -> DataError | None:
        text = file.read_text(encoding="utf-8-sig")
        types = _TypeTracker()
        line, last = 1, 0
        index = -1
        try:
            for index, (item, offset) in enumerate(_array_items(text)):
                line += text.count("\n", last, offset)
                last = offset
                where = f"line {line} (item {index + 1})"
                if not isinstance(item, dict):
                    return DataError(
                        f"{shown} {where}: {_article(_json_kind(item) or 'null')} where a JSON object was expected",
                        fix='the array must hold objects like {"text": ..., "label": ...}',
                    )
                if problem := types.conflict(item, where):
                    return DataError(f"{shown} {where}: {problem}", fix="give every value in a column the same type")
        except json.JSONDecodeError as err:
            return DataError(
                f"{shown} line {err.lineno}: invalid JSON ({err.msg} at column {err.colno})",
                fix="fix the JSON syntax there",
            )
        except ValueError as err:
            return DataError(f"{shown}: invalid JSON ({err})", fix="fix the JSON syntax")
        if index < 0:
            return DataError(f"{shown}: the JSON array is empty", fix=EMPTY_FIX)
        return None


# --------------------------------------------------------------------------- CSV / TSV


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


# --------------------------------------------------------------------------- Parquet


class ParquetFormat(DataFormat):
    name = "parquet"
    extensions = (".parquet",)
    builder = "parquet"
    text = False

    def precheck(self, file: Path, shown: str) -> None:
        # datasets fails on a 0-row file with "BatchSize must be greater than 0".
        if (err := self.diagnose(file, shown)) is not None:
            raise err

    def diagnose(self, file: Path, shown: str) -> DataError | None:
        try:
            rows = pq.ParquetFile(file).metadata.num_rows
        except Exception as err:  # noqa: BLE001 - any reader failure means "not readable Parquet"
            return DataError(
                f"{shown}: not a readable Parquet file ({root_message(err)})",
                fix="re-export it as Parquet, or set data.format to the file's real format",
            )
        if rows == 0:
            return DataError(f"{shown}: no rows", fix=EMPTY_FIX)
        return None


FORMATS.register("jsonl")(JsonFormat("jsonl", (".jsonl", ".ndjson")))
FORMATS.register("json")(JsonFormat("json", (".json",)))
FORMATS.register("csv")(CsvFormat("csv", (".csv",), ","))
FORMATS.register("tsv")(CsvFormat("tsv", (".tsv",), "\t"))
FORMATS.register("parquet")(ParquetFormat())
