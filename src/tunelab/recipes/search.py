"""`tunelab search`: the nearest documents of a corpus to a query, with an embedding run's model.

Text runs search a table of texts with text queries; image runs an image folder (or a table of image
paths) with query images. The corpus is embedded once per (model, corpus bytes) and kept as an index in
the run folder,
`indexes/<corpus name>/` (embeddings.safetensors, documents.jsonl, index.json naming the corpus
sha256 and the model files it came from); later searches read it. Writes are atomic: a search killed
while indexing leaves no index, and the next one builds it again.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tunelab.errors import ConfigError
from tunelab.hashing import file_sha256
from tunelab.recipes.predict import Predictor, load_predictor

INDEX_VERSION = 1


@dataclass
class Index:
    """A corpus embedded by one run's model: row i of `vectors` is `documents[i]`."""

    documents: list[str]
    vectors: np.ndarray
    path: Path


def search(run_path: str | Path, queries: list[str], corpus: str | Path, *, column: str | None = None,
           top_k: int = 5) -> list[dict[str, Any]]:
    """For each query (a text, or an image path for image runs), the `top_k` documents of `corpus` by
    cosine similarity, best first."""
    predictor = load_predictor(run_path)
    if not hasattr(predictor.task, "embed"):
        raise ConfigError(f"{run_path} is a {predictor.config.task} run; search needs an embedding run",
                          fix="train one with task: embedding or image-embedding")
    index = build_index(predictor, Path(run_path), Path(corpus), column)
    task, max_length = predictor.task, predictor.config.train.max_length
    wanted = _unit(task.embed(predictor.model, predictor.tokenizer, queries, max_length))
    scores = wanted @ index.vectors.T
    results = []
    for query, row in zip(queries, scores):
        best = np.argsort(-row, kind="stable")[:top_k]
        results.append({"query": query, "results": [{"rank": r + 1, "document": index.documents[i],
                                                      "score": float(row[i]), "row": int(i)}
                                                     for r, i in enumerate(best)]})
    return results


def build_index(predictor: Predictor, run_dir: Path, corpus: Path, column: str | None) -> Index:
    """The run's index of `corpus`, built now unless an index of the same bytes and model exists."""
    from safetensors.numpy import load_file, save_file

    if not corpus.exists():
        raise ConfigError(f"--corpus {corpus}: no such file or folder", fix="name the documents to search")
    key = {"version": INDEX_VERSION, "corpus": corpus_sha256(corpus), "column": column,
           "model": _model_files(run_dir)}
    target = run_dir / "indexes" / corpus.stem
    if (target / "index.json").is_file() and json.loads((target / "index.json").read_text()) == key:
        documents = [json.loads(line)["text"] for line in (target / "documents.jsonl").read_text().splitlines()]
        return Index(documents, load_file(target / "embeddings.safetensors")["embeddings"], target)
    documents = predictor.task.read_corpus(corpus, column)
    vectors = _unit(predictor.task.embed(predictor.model, predictor.tokenizer, documents,
                                         predictor.config.train.max_length)).astype(np.float32)
    staging = target.with_name(f".{target.name}.building")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    save_file({"embeddings": vectors}, staging / "embeddings.safetensors")
    (staging / "documents.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in documents))
    (staging / "index.json").write_text(json.dumps(key, indent=2) + "\n")  # written last: marks it complete
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return Index(documents, vectors, target)


def corpus_sha256(path: Path) -> str:
    """sha256 of a corpus file, or of a folder's files (their relative paths and bytes)."""
    if path.is_file():
        return file_sha256(path)
    import hashlib

    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")):
        digest.update(f"{file.relative_to(path)}\0{file_sha256(file)}\n".encode())
    return digest.hexdigest()


def _model_files(run_dir: Path) -> dict[str, str]:
    """sha256 of the weights the run serves (model/ or adapter/): an index of other weights is stale."""
    folder = run_dir / "model" if (run_dir / "model" / "config.json").is_file() else run_dir / "adapter"
    return {p.name: file_sha256(p) for p in sorted(folder.glob("*.safetensors"))}


def _unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.clip(np.linalg.norm(vectors, axis=-1, keepdims=True), 1e-12, None)
