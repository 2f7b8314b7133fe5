"""JSON Lines (.jsonl, .ndjson) and JSON (.json: an array of objects, or JSON lines)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tunelab.data.formats.base import BOM, EMPTY_FIX, FORMATS, DataFormat
from tunelab.errors import DataError

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
    return head.removeprefix(BOM).lstrip().startswith(b"[")


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
                line = line.removeprefix(BOM)
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
                head = f.read(4096).removeprefix(BOM).lstrip()[1:].lstrip()
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




FORMATS.register("jsonl")(JsonFormat("jsonl", (".jsonl", ".ndjson")))
FORMATS.register("json")(JsonFormat("json", (".json",)))
