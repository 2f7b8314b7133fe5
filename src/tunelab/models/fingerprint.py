"""Content fingerprints of Hugging Face model folders, for lineage and cache keys."""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

from tunelab import hashcache
from tunelab.hashing import file_sha256  # noqa: F401 - one definition, re-exported for model code

CONFIG_FILE = "config.json"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
TOKENIZER_FILES = frozenset(
    {
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "added_tokens.json",
        "vocab.txt",
        "vocab.json",
        "merges.txt",
        "tokenizer.model",
        "spiece.model",
        "sentencepiece.bpe.model",
        "chat_template.jinja",
        "chat_template.json",
    }
)

_CHUNK = 1 << 22
# (folder, listing with sizes and stat keys) -> digest, in this process; across processes the hash memo
# (tunelab.hashcache) keeps it: re-hashing a 500 MB model costs ~1 s per resolve.
_memo: dict[tuple[str, tuple[tuple[str, int, str], ...]], str] = {}


def _is_fingerprinted(name: str) -> bool:
    if name.startswith("."):
        return False
    return (
        name == CONFIG_FILE
        or name in TOKENIZER_FILES
        or name.endswith(WEIGHT_SUFFIXES)
        or name.endswith(".index.json")  # sharded-weight index
        or name.endswith(".tiktoken")
    )


def fingerprinted_files(folder: Path) -> list[Path]:
    """The files a fingerprint covers: config.json, weights and tokenizer files, sorted by name."""
    return sorted((p for p in folder.iterdir() if p.is_file() and _is_fingerprinted(p.name)), key=lambda p: p.name)


def fingerprint_folder(folder: Path) -> str:
    """sha256 hex over the name, size and bytes of each fingerprinted file in `folder` (sorted by name).

    Names and sizes are hashed too so that moving bytes between files changes the fingerprint.
    """
    files = fingerprinted_files(folder)
    listing = tuple((p.name, p.stat().st_size, hashcache.stat_key(p)) for p in files)
    key = (str(folder.resolve()), listing)
    if key not in _memo:
        stat = "|".join(f"{name}={k}" for name, _, k in listing)
        _memo[key] = hashcache.cached("model-fingerprint", folder, stat, lambda: _read_fingerprint(files, listing))
    return _memo[key]


def _read_fingerprint(files: list[Path], listing: tuple[tuple[str, int, str], ...]) -> str:
    digest = hashlib.sha256()
    for path, (name, size, _) in zip(files, listing, strict=True):
        digest.update(f"{name}\0{size}\0".encode())
        with path.open("rb") as fh:
            while chunk := fh.read(_CHUNK):
                digest.update(chunk)
    return digest.hexdigest()


def safetensors_param_count(folder: Path) -> int | None:
    """Number of stored weights, read from the safetensors headers only (no tensor data is loaded)."""
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        return None
    total = 0
    for path in files:
        with path.open("rb") as fh:
            (header_len,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(header_len))
        for name, info in header.items():
            if name == "__metadata__":
                continue
            count = 1
            for dim in info["shape"]:
                count *= dim
            total += count
    return total
