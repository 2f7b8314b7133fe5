"""ONNX export of classifiers, checked in onnxruntime against PyTorch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tunelab.config import load_config
from tunelab.errors import ExportError
from tunelab.recipes.export import export_run
from tunelab.recipes.train import train


@pytest.mark.parametrize("method", ["full", "lora"])
def test_text_classifier_onnx_matches_pytorch(make_config, method: str) -> None:
    import onnxruntime as ort
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    run = train(load_config(make_config(method, method={"name": method}, train={"max_steps": 2}))).run.path
    summary = export_run(run, "onnx")
    path = Path(summary["path"])
    assert path == run / "exports" / "model.onnx" and summary["max_abs_diff"] < 1e-4

    tokenizer = AutoTokenizer.from_pretrained(run / "model")
    model = AutoModelForSequenceClassification.from_pretrained(run / "model").eval()
    texts = ["the striker scored a late goal in the cup match", "vote", "new chip and cloud software data today"]
    enc = tokenizer(texts, padding=True, return_tensors="pt")  # a batch size and length not seen at export
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inputs = {i.name: enc[i.name].numpy() for i in session.get_inputs()}
    got = session.run(["logits"], inputs)[0]
    with torch.no_grad():
        expected = model(**enc).logits.numpy()
    assert np.abs(got - expected).max() < 1e-4


def test_onnx_export_failure_leaves_no_file(make_config, monkeypatch) -> None:
    run = train(load_config(make_config(train={"max_steps": 1}))).run.path

    def broken(*args, **kwargs):
        raise RuntimeError("unsupported operator aten::magic")

    monkeypatch.setattr(torch.onnx, "export", broken)
    with pytest.raises(ExportError, match="could not be exported to ONNX: unsupported operator"):
        export_run(run, "onnx")
    assert list((run / "exports").iterdir()) == []
