"""Token classification on the tiny BERT: alignment, windows, entity metrics, predicted spans."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import yaml

from tests.conftest import write_jsonl
from tunelab.config import load_config
from tunelab.metrics.token_classification import entity_metrics

DRUGS = ["aspirin", "metformin", "insulin", "warfarin"]
CONDITIONS = ["diabetes", "asthma", "migraine", "gout"]
FILLER = ["patient", "was", "given", "for", "today", "and", "the", "with"]


def ner_rows(n: int, seed: int, long: bool = False) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        tokens, tags = [], []
        for _ in range(rng.randint(4, 30 if long else 8)):
            choice = rng.random()
            if choice < 0.2:
                tokens.append(rng.choice(DRUGS)); tags.append("B-DRUG")  # noqa: E702
            elif choice < 0.3:
                tokens += [rng.choice(["type", "chronic"]), rng.choice(CONDITIONS)]
                tags += ["B-COND", "I-COND"]
            else:
                tokens.append(rng.choice(FILLER)); tags.append("O")  # noqa: E702
        rows.append({"tokens": tokens, "tags": tags})
    return rows


@pytest.fixture
def ner_config(tmp_path: Path):
    data = {s: write_jsonl(tmp_path / f"{s}.jsonl", ner_rows(n, seed)) for s, n, seed in
            [("train", 300, 1), ("validation", 40, 2), ("test", 60, 3)]}

    def make(**sections) -> Path:
        body = {"task": "token-classification", "model": {"source": "tiny-random-bert"},
                "data": {k: str(v) for k, v in data.items()},
                "train": {"epochs": 12, "batch_size": 16, "learning_rate": 1e-2, "max_length": 64, "log_every": 1},
                "output": {"dir": str(tmp_path / "runs")}}
        for section, values in sections.items():
            body[section] = {**body.get(section, {}), **values}
        path = tmp_path / "ner.yaml"
        path.write_text(yaml.safe_dump(body))
        return path

    return make


def test_entity_metrics_count_exact_spans_only() -> None:
    gold = [["B-DRUG", "O", "B-COND", "I-COND"], ["O", "B-DRUG"]]
    pred = [["B-DRUG", "O", "B-COND", "O"], ["O", "B-DRUG"]]  # the condition's span is cut short
    m = entity_metrics(gold, pred)
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == pytest.approx(2 / 3)
    assert m["per_type"]["DRUG"]["f1"] == 1.0 and m["per_type"]["COND"]["f1"] == 0.0
    assert m["token_accuracy"] == pytest.approx(5 / 6)


def test_windows_cover_every_word_once(ner_config) -> None:
    from tunelab.models import load_tokenizer, resolve_model
    from tunelab.tasks.token_classification import encode_windows

    config = load_config(ner_config(train={"max_length": 24}, tokens={"stride": 6}))
    tokenizer = load_tokenizer(resolve_model(config.model), config.model)
    sentence = ner_rows(1, seed=7, long=True)[0]["tokens"] + ["aspirin"] * 10
    windows = encode_windows(tokenizer, [sentence], config)
    assert len(windows.meta) > 2  # long enough for several windows
    owned = [word for _, word_ids, _, flags in windows.meta for word, f in zip(word_ids, flags) if f]
    assert sorted(owned) == list(range(len(sentence)))  # each word scored exactly once


def test_training_learns_entities_and_predicts_spans(ner_config) -> None:
    from tunelab.recipes.predict import predict_texts
    from tunelab.recipes.train import train

    outcome = train(load_config(ner_config()))
    results = json.loads((outcome.run.path / "eval.json").read_text())
    # The tiny character-level BERT (2 layers, width 32) generalizes modestly (0.74-0.80 across batch
    # plans; about 0.05 untrained); the real-model test below holds MiniLM to more.
    assert results["test"]["f1"] > 0.65, results["test"]
    assert set(results["test"]["per_type"]) == {"DRUG", "COND"}
    labels = json.loads((outcome.run.path / "labels.json").read_text())
    assert labels == ["O", "B-COND", "I-COND", "B-DRUG", "I-DRUG"]
    text = "The patient was given insulin for chronic gout, today."
    [prediction] = predict_texts(outcome.run.path, [text])
    spans = {(e["label"], e["text"]) for e in prediction["entities"]}
    assert ("DRUG", "insulin") in spans
    for entity in prediction["entities"]:
        assert text[entity["start"] : entity["end"]] == entity["text"] and 0 < entity["score"] <= 1


def test_long_sentences_are_windowed_and_still_scored_whole(ner_config, tmp_path: Path) -> None:
    from tunelab.recipes.train import train

    long = write_jsonl(tmp_path / "long.jsonl", ner_rows(20, seed=9, long=True))
    config = load_config(ner_config(data={"test": str(long)}, train={"max_length": 32, "max_steps": 2},
                                    tokens={"stride": 8}))
    outcome = train(config)
    data = json.loads((outcome.run.path / "data.json").read_text())
    assert data["windows"]["test"] > data["rows"]["test"]  # some sentences needed several windows
    results = json.loads((outcome.run.path / "eval.json").read_text())
    words = sum(len(r["tokens"]) for r in ner_rows(20, seed=9, long=True))
    assert results["test"]["words"] == words  # every word predicted exactly once


def test_token_classifier_exports_to_onnx(ner_config) -> None:
    from tunelab.recipes.export import export_run
    from tunelab.recipes.train import train

    run = train(load_config(ner_config(train={"max_steps": 2}))).run.path
    summary = export_run(run, "onnx")
    assert summary["max_abs_diff"] < 1e-4 and summary["inputs"][:2] == ["input_ids", "attention_mask"]


@pytest.mark.slow
def test_minilm_learns_the_clinical_corpus(tmp_path: Path) -> None:
    """The real MiniLM-L6 on the packaged clinical corpus (CoNLL train, span-layout test)."""
    from tunelab.data.corpora import CORPORA
    from tunelab.recipes.train import train

    CORPORA.get("clinical-ner")(tmp_path / "data")
    body = {"task": "token-classification", "model": {"source": "minilm-l6"},
            "data": {"train": str(tmp_path / "data" / "train.conll"),
                     "validation": str(tmp_path / "data" / "validation.conll"),
                     "test": str(tmp_path / "data" / "test.jsonl")},
            "train": {"epochs": 3, "batch_size": 16, "learning_rate": 2e-4, "max_length": 96},
            "output": {"dir": str(tmp_path / "runs")}}
    config = tmp_path / "ner.yaml"
    config.write_text(yaml.safe_dump(body))
    outcome = train(load_config(config))
    results = json.loads((outcome.run.path / "eval.json").read_text())
    assert results["test"]["f1"] > 0.6, results["test"]
    assert set(results["test"]["per_type"]) == {"CONDITION", "DOSE", "DRUG"}
