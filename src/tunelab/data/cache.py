"""Datasets (tokenized data, ...) cached on disk by a content key, loaded back memory-mapped."""

from __future__ import annotations

import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import datasets

from tunelab.data.fingerprint import canonical_json, digest
from tunelab.data.formats import quiet_datasets
from tunelab.data.loading import cache_dir

logger = logging.getLogger(__name__)

_STALE_SECONDS = 24 * 3600


def cached_dataset(
    key: dict, build: Callable[[], datasets.Dataset], *, what: str = "tokenized"
) -> tuple[datasets.Dataset, bool]:
    """Return (dataset, hit) for `key`, building and saving it on a miss.

    `key` is a JSON-able dict describing everything the result depends on (data file hashes,
    tokenizer fingerprint, preprocessing settings). The dataset lives in
    cache_dir()/<what>/<digest(key)>/ beside a key.json for humans; it is written to a temporary
    sibling and renamed into place, so a reader never sees a half-written folder and a concurrent
    writer that loses the race discards its copy. The returned dataset is always loaded back from
    disk, so it is memory-mapped.
    """
    if not what or "/" in what or what.startswith("."):
        raise ValueError(f"`what` must be a plain folder name, got {what!r}")
    root = cache_dir() / what
    target = root / digest(key)
    if target.is_dir():
        dataset = _load(target)
        if dataset is not None:
            logger.debug("%s data: cache hit %s", what, target)
            return dataset, True
    root.mkdir(parents=True, exist_ok=True)
    _sweep_stale(root)
    dataset = build()
    if not isinstance(dataset, datasets.Dataset):
        raise TypeError(f"build() must return a datasets.Dataset, got {type(dataset).__name__}")
    _save(dataset, key, target)
    loaded = _load(target)
    if loaded is None:
        raise RuntimeError(f"{target} was just written but cannot be loaded")
    logger.debug("%s data: built and cached %s", what, target)
    return loaded, False


def _load(target: Path) -> datasets.Dataset | None:
    try:
        with quiet_datasets():
            return datasets.load_from_disk(str(target))
    except Exception as err:  # noqa: BLE001 - a damaged entry is rebuilt, not fatal
        logger.warning("ignoring damaged cache entry %s (%s); rebuilding", target, err)
        shutil.rmtree(target, ignore_errors=True)
        return None


def _save(dataset: datasets.Dataset, key: dict, target: Path) -> None:
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        with quiet_datasets():
            dataset.save_to_disk(str(tmp))
        (tmp / "key.json").write_text(canonical_json(key, indent=2) + "\n", encoding="utf-8")
        try:
            os.replace(tmp, target)
        except OSError:
            if not target.is_dir():
                raise
            logger.debug("another process cached %s first; discarding our copy", target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _sweep_stale(root: Path) -> None:
    """Remove temporary folders left by writers that were killed mid-save."""
    cutoff = time.time() - _STALE_SECONDS
    for entry in root.glob(".*.tmp-*"):
        try:
            if entry.stat().st_mtime < cutoff:
                shutil.rmtree(entry, ignore_errors=True)
        except OSError:
            pass
