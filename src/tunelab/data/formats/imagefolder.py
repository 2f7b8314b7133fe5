"""Image folders: a folder whose sub-folders are class names holding images.

    data/train/cat/001.jpg      →  {"image": "/abs/data/train/cat/001.jpg", "label": "cat"}
    data/train/dog/a/002.png    →  {"image": "/abs/data/train/dog/a/002.png", "label": "dog"}

The label is the first-level sub-folder's name; images may sit deeper inside it. Rows come in a
stable order (class name, then path within the class, by code point), so the same folder always
loads the same table. Each image is one "file" of the table (like a .txt document), so `where(row)`
is the image's path and the table's fingerprint covers every image's bytes. Images are only listed
here; `tunelab.data.images.check_images` decodes them all before training.
"""

from __future__ import annotations

import logging
from pathlib import Path

from tunelab.data.formats.base import FORMATS, DataFormat
from tunelab.errors import DataError

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
LAYOUT_FIX = "put the images in one sub-folder per class (data/train/cat/1.jpg, data/train/dog/2.jpg)"


def is_image_file(path: Path) -> bool:
    """A visible regular file (symlinks followed) with an image extension."""
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".") and path.is_file()


def _visible(entries: list[Path]) -> list[Path]:
    return sorted(p for p in entries if not p.name.startswith("."))


def _class_folders(folder: Path) -> list[Path]:
    return [p for p in _visible(list(folder.iterdir())) if p.is_dir()]


def _walk(folder: Path) -> list[Path]:
    """Every visible file under `folder` (hidden files and folders skipped), in code-point order of
    the path relative to `folder`."""
    found = [p for p in folder.rglob("*") if not any(part.startswith(".") for part in p.relative_to(folder).parts)]
    return sorted((p for p in found if not p.is_dir()), key=lambda p: p.relative_to(folder).parts)


def looks_like_imagefolder(folder: Path) -> bool:
    """True when some sub-folder of `folder` holds an image (stops at the first one found)."""
    for sub in _class_folders(folder):
        for path in sub.rglob("*"):
            if is_image_file(path) and not any(part.startswith(".") for part in path.relative_to(sub).parts):
                return True
    return False


def scan(folder: Path, key: str) -> tuple[list[Path], list[str]]:
    """(image paths relative to `folder`, their class names) of the image folder `folder`, in row order.

    Files that are not images (and files directly in `folder`, which belong to no class) are
    ignored with one warning giving their count. Raises DataError when no class holds an image.
    """
    root = folder.resolve()
    images: list[Path] = []
    labels: list[str] = []
    ignored = [p for p in _visible(list(root.iterdir())) if not p.is_dir()]
    for sub in _class_folders(root):
        for path in _walk(sub):
            if is_image_file(path):
                images.append(path.relative_to(root))
                labels.append(sub.name)
            else:
                ignored.append(path)
    if not images:
        raise DataError(f"{key}: {folder} holds no images in class sub-folders", fix=LAYOUT_FIX)
    if ignored:
        shown = ", ".join(str(p.relative_to(root)) for p in ignored[:5])
        logger.warning("%s: ignoring %d file(s) in %s that are not images in a class sub-folder: %s",
                       key, len(ignored), folder, shown)
    return images, labels


class ImageFolderFormat(DataFormat):
    """Not a file format: `tunelab.data.loading` lists the folder with `scan` instead of loading files."""

    name = "imagefolder"
    extensions: tuple[str, ...] = ()  # never picked by extension; a folder of class sub-folders is detected
    text = False

    def locate(self, file: Path, row: int) -> str:
        return ""  # each image is its own "file": its path says it all

    def precheck(self, file: Path, shown: str) -> None:
        raise DataError(f"{shown}: data.format is imagefolder but this is a file, not a folder", fix=LAYOUT_FIX)


FORMATS.register("imagefolder")(ImageFolderFormat())
