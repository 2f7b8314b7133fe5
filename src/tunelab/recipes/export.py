"""`tunelab export`: a trained run as a merged model folder, an adapter folder, a GGUF or ONNX file, or
(embedding runs) the embedding index of a corpus: numpy and safetensors vectors, and a FAISS index when
faiss is installed.

Every output is assembled under a temporary name beside its target and renamed into place, so a
failed export never leaves a half-written folder or file.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any, Literal

from tunelab.errors import ExportError
from tunelab.export import write_gguf
from tunelab.runs import RunFolder
from tunelab.tasks import TASKS

Format = Literal["merged", "adapter", "gguf", "onnx", "index"]


def export_run(run_path: str | Path, fmt: Format, out: Path | None = None, dtype: str = "f16",
               corpus: Path | None = None, column: str | None = None) -> dict[str, Any]:
    run = RunFolder.open_finished(run_path)
    if fmt == "index" and corpus is None:
        raise ExportError("--format index needs the documents to index", fix="add --corpus FILE_OR_FOLDER")
    target = out or run.path / "exports" / _default_name(fmt, dtype)
    if target.exists():
        raise ExportError(f"{target} already exists", fix="remove it or choose another --out")
    target.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "adapter":
        adapter = run.path / "adapter"
        if not (adapter / "adapter_config.json").is_file():
            raise ExportError(f"{run.path} has no adapter (it was trained with method {run.config().method.name})",
                              fix="export --format merged instead")
        _copy_folder(adapter, target)
        return {"format": "adapter", "path": str(target)}
    if fmt == "onnx":
        return _export_onnx(run, target)
    if fmt == "index":
        assert corpus is not None
        return _export_index(run, target, corpus, column)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".export-") as scratch:
        merged = _merged_folder(run, Path(scratch) / "merged")
        if fmt == "merged":
            _copy_folder(merged, target)
            return {"format": "merged", "path": str(target)}

        summary = write_gguf(merged, target, dtype, name=run.path.name)  # type: ignore[arg-type]
        return {"format": "gguf", "path": str(target), **summary}


def _default_name(fmt: Format, dtype: str) -> str:
    return {"merged": "merged", "adapter": "adapter", "gguf": f"model-{dtype}.gguf", "onnx": "model.onnx",
            "index": "index"}[fmt]


def _export_onnx(run: RunFolder, target: Path) -> dict[str, Any]:
    """The trained model (adapters merged) as ONNX; the task provides example inputs."""
    # onnx is an optional extra: only an ONNX export needs it installed
    from tunelab.export.onnx import write_onnx

    config = run.config()
    task = TASKS.get(config.task)()
    model, tokenizer = task.load_trained(run.path, config)
    example, dynamic = task.onnx_example(model, tokenizer, config)  # refuses tasks without ONNX export
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    summary = write_onnx(model, example, target, dynamic)
    return {"format": "onnx", "path": str(target), **summary}


def _merged_folder(run: RunFolder, scratch: Path) -> Path:
    """The run's model/ folder; for adapter-only runs, base + adapter merged into `scratch`."""
    if (run.model_dir / "config.json").is_file():
        return run.model_dir
    config = run.config()
    task = TASKS.get(config.task)()
    if config.method.name in ("prompt-tuning", "prefix-tuning"):
        # PEFT's merge_and_unload would hand back the bare base: the virtual tokens are no weights
        raise ExportError(f"{run.path} was trained with {config.method.name}: its virtual tokens cannot merge "
                          "into the weights", fix="export --format adapter, and load it with PeftModel")
    model, tokenizer = task.load_trained(run.path, config)
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    model.save_pretrained(scratch, safe_serialization=True)
    tokenizer.save_pretrained(scratch)
    task.finalize_saved(scratch)
    return scratch


def _export_index(run: RunFolder, target: Path, corpus: Path, column: str | None) -> dict[str, Any]:
    """The run's index of `corpus` (built or reused, recipes/search.py) as a folder other tools read:
    embeddings.npy / embeddings.safetensors (unit rows: inner product is cosine), documents.jsonl in
    row order, index.json, and index.faiss (an exact inner-product index) when faiss is installed."""
    import importlib.util
    import json

    import numpy as np

    from tunelab.recipes.predict import load_predictor
    from tunelab.recipes.search import build_index

    predictor = load_predictor(run.path)
    if not hasattr(predictor.task, "embed"):
        raise ExportError(f"{run.path} is a {predictor.config.task} run; --format index needs an embedding run",
                          fix="train one with task: embedding or image-embedding")
    index = build_index(predictor, run.path, corpus, column)
    tmp = target.parent / f".{target.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        shutil.copytree(index.path, tmp)
        np.save(tmp / "embeddings.npy", index.vectors)
        faiss = importlib.util.find_spec("faiss") is not None
        if faiss:
            import faiss as faiss_lib

            flat = faiss_lib.IndexFlatIP(index.vectors.shape[1])
            flat.add(np.ascontiguousarray(index.vectors, dtype=np.float32))
            faiss_lib.write_index(flat, str(tmp / "index.faiss"))
        record = json.loads((tmp / "index.json").read_text())
        record.update({"run": run.path.name, "documents": len(index.documents),
                       "dimension": int(index.vectors.shape[1]), "similarity": "inner product of unit vectors",
                       "files": sorted(p.name for p in tmp.iterdir())})
        (tmp / "index.json").write_text(json.dumps(record, indent=2) + "\n")
        tmp.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"format": "index", "path": str(target), "documents": len(index.documents), "faiss": faiss}


def _copy_folder(source: Path, target: Path) -> None:
    tmp = target.parent / f".{target.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        shutil.copytree(source, tmp)
        tmp.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
