"""Open images from table rows, and check every image of a table once before training.

A row's image is a path (absolute, or relative to the folder of the data file the row came from),
raw bytes (a Parquet binary column), or a Hugging Face `Image` struct {"bytes", "path"}. Every image
is decoded in full here, before training, so a corrupt file stops the run (or is skipped) with its
location instead of crashing an epoch halfway through.
"""

from __future__ import annotations

import bisect
import io
import logging
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tunelab.config.schema import DataConfig
from tunelab.data.columns import require_columns
from tunelab.data.loading import Table
from tunelab.errors import DataError

if TYPE_CHECKING:
    from PIL import Image as PILImage

logger = logging.getLogger(__name__)

BAD_IMAGE_FIX = "remove or replace it, or set data.bad_images: skip"
EXAMPLES = 5  # bad images listed in the summary
BATCH = 256  # rows read from Arrow at a time: bytes columns are never loaded whole
SIXTEEN_BIT_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N")


class ImageProblem(Exception):
    """Why one image cannot be used; `reason` is a short phrase for a one-line error."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def open_image(value: Any, base_dir: Path) -> PILImage.Image:
    """The image a row holds, fully decoded, EXIF-rotated and in RGB; raises ImageProblem(reason)."""
    image, _ = _decode(value, base_dir)
    return image


def _decode(value: Any, base_dir: Path) -> tuple[PILImage.Image, bool]:
    """(RGB image, whether its mode had to be converted); the opened file is closed before returning."""
    from PIL import Image, ImageOps

    opened = value if isinstance(value, Image.Image) else _open(value, base_dir)
    try:
        opened.load()  # the full decode: truncated and corrupt data only fail here
        image = ImageOps.exif_transpose(opened)  # a copy, so closing `opened` below is safe
        if image.mode == "RGB":
            return image, False
        return _to_rgb(image), True
    except Image.DecompressionBombError as err:
        raise ImageProblem(f"too large to decode safely ({err})") from None
    except Exception as err:  # noqa: BLE001 - Pillow raises OSError, SyntaxError, ValueError, struct.error...
        raise ImageProblem(_corrupt_reason(err)) from None
    finally:
        if opened is not value:
            opened.close()


def _open(value: Any, base_dir: Path) -> PILImage.Image:
    from PIL import Image

    source = _source(value, base_dir)
    try:
        return Image.open(source)
    except Image.UnidentifiedImageError:
        raise ImageProblem("not an image (or in a format Pillow cannot read)") from None
    except FileNotFoundError:
        raise ImageProblem(f"image file {source} not found") from None
    except IsADirectoryError:
        raise ImageProblem(f"{source} is a folder, not an image file") from None
    except PermissionError:
        raise ImageProblem(f"image file {source} cannot be read (permission denied)") from None
    except Image.DecompressionBombError as err:
        raise ImageProblem(f"too large to decode safely ({err})") from None
    except Exception as err:  # noqa: BLE001 - see _decode
        raise ImageProblem(_corrupt_reason(err)) from None


def _source(value: Any, base_dir: Path) -> Path | io.BytesIO:
    """A path or an in-memory file for `value`; ImageProblem for empty or unusable values."""
    if isinstance(value, dict):  # a Hugging Face Image struct: bytes win over the path they came from
        data, path = value.get("bytes"), value.get("path")
        value = data if data else path
    if value is None:
        raise ImageProblem("no image (the value is empty)")
    if isinstance(value, (bytes, bytearray, memoryview)):
        if len(value) == 0:
            raise ImageProblem("the image bytes are empty (0 bytes)")
        return io.BytesIO(bytes(value))
    if isinstance(value, (str, os.PathLike)):
        if not str(value).strip():
            raise ImageProblem("no image (the path is empty)")
        path = Path(value).expanduser()
        path = path if path.is_absolute() else base_dir / path
        if path.is_file() and path.stat().st_size == 0:
            raise ImageProblem("the image file is empty (0 bytes)")
        return path
    raise ImageProblem(f"holds {type(value).__name__} values, not an image path or image bytes")


def _corrupt_reason(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    detail = text[0] if text else type(err).__name__
    if "truncated" in detail:
        return f"truncated image ({detail})"
    return f"corrupt image ({detail})"


def _to_rgb(image: PILImage.Image) -> PILImage.Image:
    """RGB from any mode Pillow opens: palette, grayscale, CMYK, alpha (dropped), 16-bit and float."""
    from PIL import Image

    if image.mode in SIXTEEN_BIT_MODES:
        # Pillow's convert("RGB") clips 16-bit values at 255 (a white image); scale the range instead.
        pixels = np.asarray(image, dtype=np.float64) / 257.0
        return Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), "L").convert("RGB")
    if image.mode == "F":
        pixels = np.asarray(image, dtype=np.float64)
        scale = 255.0 if np.nanmax(pixels, initial=0.0) <= 1.0 else 1.0  # [0, 1] floats or [0, 255] values
        pixels = np.nan_to_num(pixels * scale)
        return Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), "L").convert("RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")  # Pillow warns when a palette with transparency goes to RGB directly
    return image.convert("RGB")


# --------------------------------------------------------------------------- whole-table check


def check_images(table: Table, cfg: DataConfig) -> tuple[np.ndarray, dict[str, Any]]:
    """Decode every image of `table` once; return (indices of the good rows, summary).

    summary: {"checked", "bad", "converted", "examples": [{"where", "reason"}, ...]}; "converted"
    counts images whose mode (grayscale, palette, CMYK, 16-bit, alpha) was converted to RGB. With
    data.bad_images: error the first bad image raises DataError naming its row; with skip the bad
    rows are left out of the indices and counted.
    """
    column = cfg.image_column
    require_columns(table, [column], keys={column: "data.image_column"})
    bad_rows: list[int] = []
    examples: list[dict[str, str]] = []
    converted = 0
    with ThreadPoolExecutor(max_workers=_workers()) as pool:  # Pillow decodes without holding the GIL
        for start, values in _batches(table, column):
            dirs = [_base_dir(table, start + i) for i in range(len(values))]
            for offset, (reason, was_converted) in enumerate(pool.map(_check_one, values, dirs)):
                converted += was_converted
                if reason is None:
                    continue
                where = _where(table, start + offset, values[offset]) if len(examples) < EXAMPLES else ""
                if cfg.bad_images == "error":
                    raise DataError(f"{where}: {reason}", fix=BAD_IMAGE_FIX)
                bad_rows.append(start + offset)
                if where:
                    examples.append({"where": where, "reason": reason})
    good = np.setdiff1d(np.arange(table.dataset.num_rows, dtype=np.int64), np.array(bad_rows, dtype=np.int64))
    if bad_rows:
        first = f"{examples[0]['where']}: {examples[0]['reason']}"
        if len(good) == 0:
            raise DataError(f"{table.name}: no usable images, all {len(bad_rows)} are bad (first: {first})",
                            fix="check data.image_column, and that relative image paths start at the data file's folder")
        logger.warning("%s: skipping %d bad image(s) (data.bad_images: skip); first: %s",
                       table.name, len(bad_rows), first)
    summary = {"checked": table.dataset.num_rows, "bad": len(bad_rows), "converted": converted, "examples": examples}
    return good, summary


def _workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def _check_one(value: Any, base_dir: Path) -> tuple[str | None, bool]:
    try:
        _, was_converted = _decode(value, base_dir)
    except ImageProblem as problem:
        return problem.reason, False
    return None, was_converted


def _batches(table: Table, column: str) -> Iterator[tuple[int, list[Any]]]:
    """(first row, values) per BATCH rows, read as Arrow so datasets' Image feature never decodes them."""
    data = table.dataset.select_columns([column]).with_format("arrow")
    for start in range(0, data.num_rows, BATCH):
        yield start, data[start : start + BATCH].column(0).to_pylist()


def _base_dir(table: Table, row: int) -> Path:
    """The folder of the file `row` came from: relative image paths start there."""
    if not table.files:
        return Path.cwd()
    starts = table.starts or [0]
    index = bisect.bisect_right(starts, row) - 1 if len(starts) == len(table.files) else 0
    return table.files[index].parent


def _where(table: Table, row: int, value: Any) -> str:
    """The row's location; for a path in a CSV/JSON row, the path too (an image folder row IS its path)."""
    where = table.where(row)
    if table.format != "imagefolder" and isinstance(value, str):
        return f"{where} (image {value})"
    return where
