"""The data-format interface and the whole-file checks shared by every format.

Each format knows how to load one file into a `datasets.Dataset` (through the `datasets` builders,
so the result is Arrow and memory-mapped), how to check a file cheaply before loading, how to find
the physical line of a row, and how to DIAGNOSE a failed load: scan the file for the first bad
line and say what is wrong. The scanners are pure Python and only run on error paths (or, for
`where()`, when a message needs a line number).
"""

from __future__ import annotations

import codecs
import glob
import hashlib
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import datasets

from tunelab.choices import Choices
from tunelab.errors import DataError

logger = logging.getLogger(__name__)

CHUNK = 1 << 20
BOM = codecs.BOM_UTF8
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


FORMATS: Choices[DataFormat] = Choices("data format")


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


