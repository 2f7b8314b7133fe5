"""Load a data file or folder into a `Table`: a memory-mapped `datasets.Dataset` plus where its rows came from.

The happy path is `datasets` all the way (Arrow, memory-mapped, cached under our cache dir). Before
loading, each file is streamed once to hash it and check it is non-empty UTF-8 (datasets stores
invalid UTF-8 from JSON silently and only fails when a row is read). When datasets raises, the
format's scanner finds the first bad line so the user gets one line naming file, line and fix.
"""

from __future__ import annotations

import bisect
import hashlib
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import pyarrow as pa

from tunelab.config.schema import DataConfig
from tunelab.data.formats import (
    EMPTY_FIX,
    FORMATS,
    DataFormat,
    check_file,
    format_for_extension,
    quiet_datasets,
    root_message,
)
from tunelab.data.formats.imagefolder import looks_like_imagefolder
from tunelab.data.formats.imagefolder import scan as scan_imagefolder
from tunelab.errors import DataError
from tunelab.paths import cache_dir

logger = logging.getLogger(__name__)


@dataclass
class Table:
    """Rows of one split (all files concatenated, in file order) and where each row came from.

    Row locations refer to `dataset` as loaded; compute them before filtering or shuffling.
    """

    dataset: datasets.Dataset
    files: list[Path]
    split: str
    source: Path | None = None  # the path as configured (file or folder)
    format: str | None = None  # format name; None: from each file's extension
    starts: list[int] = field(default_factory=list, repr=False)  # first row of each file
    hashes: dict[Path, tuple[int, int, str]] = field(default_factory=dict, repr=False)  # size, mtime_ns, sha256

    @property
    def name(self) -> str:
        """The configured path, for messages about the whole table."""
        if self.source is not None:
            return str(self.source)
        return str(self.files[0]) if len(self.files) == 1 else ", ".join(map(str, self.files))

    def where(self, row: int) -> str:
        """Human location of `row`: 'data/x.jsonl line 17', 'data/x.csv line 5', 'data/x.parquet row 12'.

        Line numbers are physical lines of the file (blank lines and the CSV header counted);
        Parquet rows count from 1. Computed by scanning the file, only when asked.
        """
        if not 0 <= row < self.dataset.num_rows:
            raise IndexError(f"row {row} is outside {self.name} ({self.dataset.num_rows} rows)")
        starts = self.starts or [0]
        if len(starts) != len(self.files):
            return f"{self.name} row {row + 1}"
        index = bisect.bisect_right(starts, row) - 1
        file = self.files[index]
        fmt = FORMATS.get(self.format) if self.format else format_for_extension(file)
        local = row - starts[index]
        place = fmt.locate(file, local) if fmt else f"row {local + 1}"
        return f"{file} {place}" if place else str(file)  # an image of an image folder is a whole "file"


@contextmanager
def quiet_loading() -> Iterator[None]:
    """Silence the "data.train: N rows from ..." lines, for loads that are not the run's own (checks, counts)."""
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def load_table(path: str | Path, cfg: DataConfig, split: str) -> Table:
    """Load the file or folder `path` for `split` ("train" | "validation" | "test").

    A folder expands to its data files (sorted by name, not recursive, hidden files skipped).
    A folder with no data files on top but images in sub-folders (or any folder with
    data.format: imagefolder) is an image folder: one row per image, labelled by its sub-folder.
    `cfg.max_rows` keeps the first N rows of the concatenation; files past them are not read.
    Raises DataError with one line naming the file (and line) and the fix.
    """
    key = f"data.{split}"
    source = Path(path)
    if not source.exists():
        raise DataError(f"{key}: {source} does not exist", fix=f"check the path (relative paths start at {Path.cwd()})")
    if source.is_dir() and _is_imagefolder(source, cfg.format):
        return _load_imagefolder(source, cfg, split, key)
    if source.is_dir():
        files, fmt = _folder_files(source, cfg.format, key)
    else:
        files, fmt = [source], _file_format(source, cfg.format, key)

    parts: list[datasets.Dataset] = []
    hashes: dict[Path, tuple[int, int, str]] = {}
    rows = 0
    for file in files:
        part, hashes[file] = _load_file(file, fmt)
        parts.append(part)
        rows += part.num_rows
        if cfg.max_rows is not None and rows >= cfg.max_rows:
            break
    used = files[: len(parts)]
    dataset = _concatenate(parts, used)
    if cfg.max_rows is not None and dataset.num_rows > cfg.max_rows:
        dataset = dataset.select(range(cfg.max_rows))
    starts = [0]
    for part in parts[:-1]:
        starts.append(starts[-1] + part.num_rows)
    logger.info("%s: %d rows from %s (%d file(s))", key, dataset.num_rows, source, len(used))
    return Table(dataset, used, split, source=source, format=fmt.name, starts=starts, hashes=hashes)


def _is_imagefolder(folder: Path, configured: str) -> bool:
    """data.format: imagefolder, or auto with no data files on top but images in class sub-folders."""
    if configured != "auto":
        return configured == "imagefolder"
    top = [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")]
    # .txt/.md files beside class folders are notes (a README.md), not data.
    if any((fmt := format_for_extension(p)) is not None and fmt.name != "txt" for p in top):
        return False
    return looks_like_imagefolder(folder)


def _load_imagefolder(folder: Path, cfg: DataConfig, split: str, key: str) -> Table:
    """One row per image: {image_column: absolute path, label_column: class sub-folder name}.

    Each image is one of the table's files, so `where(row)` is its path and fingerprints cover its
    bytes. The images are hashed here but decoded only by `tunelab.data.images.check_images`.
    """
    relative, labels = scan_imagefolder(folder, key)
    if cfg.max_rows is not None:
        relative, labels = relative[: cfg.max_rows], labels[: cfg.max_rows]
    root = folder.resolve()
    files = [folder / rel for rel in relative]
    hashes = {file: stat for file in files if (stat := _image_hash(file)) is not None}
    columns = {cfg.image_column: [str(root / rel) for rel in relative], cfg.label_column: labels}
    features = datasets.Features({name: datasets.Value("string") for name in columns})
    dataset = datasets.Dataset.from_dict(columns, features=features)
    classes = len(set(labels))
    logger.info("%s: %d images in %d class folder(s) of %s", key, dataset.num_rows, classes, folder)
    return Table(dataset, files, split, source=folder, format="imagefolder", starts=list(range(len(files))),
                 hashes=hashes)


def _image_hash(file: Path) -> tuple[int, int, str] | None:
    """(size, mtime_ns, sha256) like a data file's; None when unreadable (check_images reports it)."""
    try:
        stat = file.stat()
        with open(file, "rb") as handle:
            sha = hashlib.file_digest(handle, "sha256").hexdigest()
    except OSError:
        return None
    return stat.st_size, stat.st_mtime_ns, sha


def _file_format(file: Path, configured: str, key: str) -> DataFormat:
    if configured != "auto":
        return FORMATS.get(configured)
    fmt = format_for_extension(file)
    if fmt is None:
        ext = f"extension {file.suffix!r}" if file.suffix else "no extension"
        raise DataError(
            f"{key}: {file} has {ext}, so its format is unknown",
            fix="rename it to .jsonl, .json, .csv, .tsv, .parquet, .conll, .txt or .md, or set data.format to its format",
        )
    return fmt


def _folder_files(folder: Path, configured: str, key: str) -> tuple[list[Path], DataFormat]:
    candidates = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    known = [p for p in candidates if format_for_extension(p) is not None]
    if configured == "auto":
        # .txt/.md files beside other data files are notes (a README.md), not documents: ignore them.
        known = [p for p in known if format_for_extension(p).name != "txt"] or known  # type: ignore[union-attr]
    if configured != "auto":
        fmt = FORMATS.get(configured)
        known = [p for p in known if p.suffix.lower() in fmt.extensions] or known
    if not known:
        listed = f" (found: {', '.join(p.name for p in candidates[:5])})" if candidates else ""
        raise DataError(
            f"{key}: {folder} has no data files{listed}",
            fix="put .jsonl, .json, .csv, .tsv, .parquet, .txt or .md files in it",
        )
    ignored = [p.name for p in candidates if p not in known]
    if ignored:
        shown = ", ".join(ignored[:5])
        logger.warning("%s: ignoring %d non-data file(s) in %s: %s", key, len(ignored), folder, shown)
    if configured != "auto":
        return known, FORMATS.get(configured)
    by_format: dict[str, Path] = {}
    for p in known:
        by_format.setdefault(format_for_extension(p).name, p)  # type: ignore[union-attr]
    if len(by_format) > 1:
        examples = ", ".join(f"{p.name} ({name})" for name, p in by_format.items())
        raise DataError(
            f"{key}: {folder} mixes data formats: {examples}",
            fix="keep one format per folder, or set data.format to read only files of that format",
        )
    return known, format_for_extension(known[0])  # type: ignore[return-value]


def _load_file(file: Path, fmt: DataFormat) -> tuple[datasets.Dataset, tuple[int, int, str]]:
    shown = str(file)
    try:
        stat = file.stat()
        sha = check_file(file, shown, text=fmt.text)
    except OSError as err:
        raise DataError(f"{shown}: cannot be read ({err.strerror or err})", fix="check the file's permissions") from err
    fmt.precheck(file, shown)
    try:
        dataset = fmt.load(file, cache=cache_dir() / "datasets", version=sha[:16])
    except Exception as exc:  # datasets raises many types: DatasetGenerationError, ValueError, StopIteration...
        err = fmt.diagnose(file, shown)
        if err is not None:
            raise err from exc
        raise DataError(
            f"{shown}: could not be read as {fmt.name} ({root_message(exc)})",
            fix=f"check that it is valid {fmt.name}, or set data.format",
        ) from exc
    if dataset.num_rows == 0:
        raise DataError(f"{shown}: no rows", fix=EMPTY_FIX)
    return dataset, (stat.st_size, stat.st_mtime_ns, sha)


def _concatenate(parts: list[datasets.Dataset], files: list[Path]) -> datasets.Dataset:
    """Concatenate per-file datasets, reconciling harmless type differences between files."""
    if len(parts) == 1:
        return parts[0]
    first = parts[0]
    columns = set(first.column_names)
    for part, file in zip(parts[1:], files[1:], strict=True):
        if set(part.column_names) != columns:
            theirs, ours = ", ".join(part.column_names), ", ".join(first.column_names)
            raise DataError(
                f"{file}: columns {theirs} differ from {files[0]} ({ours})",
                fix="use the same columns in every file of the folder",
            )
    target = {}
    for column in first.column_names:
        target[column] = _common_type(column, parts, files)
    unified = []
    for part in parts:
        for column, arrow_type in target.items():
            if arrow_type is not None and part.data.schema.field(column).type != arrow_type:
                with quiet_datasets():
                    part = part.cast_column(column, datasets.Value(_value_name(arrow_type)))
        unified.append(part)
    return datasets.concatenate_datasets(unified)


def _value_name(arrow_type: pa.DataType) -> str:
    names = {pa.large_string(): "large_string", pa.float64(): "float64", pa.int64(): "int64"}
    return names.get(arrow_type, str(arrow_type))


def _common_type(column: str, parts: list[datasets.Dataset], files: list[Path]) -> pa.DataType | None:
    """The type every file's `column` can be cast to; None when they already agree."""
    types = [part.data.schema.field(column).type for part in parts]
    if all(t == types[0] for t in types):
        return None
    # A column that is null in every row of a file (pandas reads it as float) takes the others' type.
    real = [
        (t, f) for t, f, p in zip(types, files, parts, strict=True) if p.data.column(column).null_count < p.num_rows
    ]
    if real and all(t == real[0][0] for t, _ in real):
        return real[0][0]
    kinds = {t for t, _ in real}
    if all(pa.types.is_integer(t) or pa.types.is_floating(t) for t in kinds):
        return pa.float64() if any(pa.types.is_floating(t) for t in kinds) else pa.int64()
    if all(pa.types.is_string(t) or pa.types.is_large_string(t) for t in kinds):
        return pa.large_string()
    (t1, f1), (t2, f2) = real[0], next((t, f) for t, f in real if t != real[0][0])
    raise DataError(
        f"{f2}: column {column!r} holds {t2} values but {f1} holds {t1}",
        fix="give the column the same type in every file of the folder",
    )
