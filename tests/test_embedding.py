"""Embedding / retrieval tuning: retrieval metrics by hand on a 5-document corpus, the losses and
pooling against sentence-transformers, config and data errors, and runs end to end (golden curve, base
vs tuned, the saved model loaded by sentence-transformers, eval parity, LoRA, retention)."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from sentence_transformers import SentenceTransformer, losses
from sentence_transformers.models import Pooling

from conftest import FILLER, WORDS, train_losses, write_config, write_jsonl
from tunelab.config import load_config
from tunelab.config.schema import ContrastiveObjective, CosineSimilarityObjective, TripletObjective
from tunelab.errors import ConfigError, DataError
from tunelab.metrics.retrieval import retrieval_metrics
from tunelab.objectives.embedding import Contrastive, CosineSimilarity, Triplet
from tunelab.recipes.evaluate import evaluate_run
from tunelab.recipes.predict import load_predictor
from tunelab.recipes.search import search
from tunelab.recipes.train import train
from tunelab.tasks.embedding import Embedding, pool, text_id

TOPICS = list(WORDS)
# the first 4 steps: ln(16) = 2.77 at the start, 16 candidates per anchor
GOLDEN = [2.76358962059021, 2.644024133682251, 2.654564142227173, 2.580660820007324]


def pair_rows(n: int, seed: int, scored: bool = False) -> list[dict]:
    """A question of one topic's words, its answer naming the topic, and a hard negative of the next topic."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        topic, other = TOPICS[i % 3], TOPICS[(i + 1) % 3]
        row = {"anchor": " ".join(rng.choices(WORDS[topic], k=3) + rng.choices(FILLER, k=2)),
               "positive": f"answer about {topic}: " + " ".join(rng.choices(WORDS[topic], k=4)),
               "negative": f"answer about {other}: " + " ".join(rng.choices(WORDS[other], k=4))}
        if scored:
            same = rng.random() < 0.5
            row["positive"] = row["positive"] if same else row["negative"]
            row["score"] = 1.0 if same else 0.0
        rows.append(row)
    return rows


@pytest.fixture
def pairs(tmp_path: Path) -> dict[str, Path]:
    return {split: write_jsonl(tmp_path / "pairs" / f"{split}.jsonl", pair_rows(n, seed))
            for split, n, seed in [("train", 96, 1), ("validation", 30, 2), ("test", 30, 3)]}


def emb_config(tmp_path: Path, files: dict[str, Path], name: str = "emb", **sections) -> Path:
    body = {
        "task": "embedding",
        "model": {"source": "tiny-random-bert"},
        "data": {k: str(v) for k, v in files.items()},
        "train": {"epochs": 3, "batch_size": 16, "learning_rate": 3e-3, "max_length": 32, "seed": 0, "log_every": 1},
        "output": {"dir": str(tmp_path / "runs")},
    }
    return write_config(tmp_path / f"{name}.yaml", body, sections)


# ---- metrics and losses ---------------------------------------------------------------------
def test_retrieval_metrics_by_hand_on_a_five_document_corpus():
    # query 0 wants doc 2 (ranked 2nd); query 1 wants docs 0 and 4 (ranked 1st and 4th); query 2 wants doc 3 (5th)
    scores = np.array([[0.9, 0.1, 0.8, 0.3, 0.2],
                       [0.9, 0.8, 0.7, 0.1, 0.5],
                       [0.5, 0.6, 0.7, 0.1, 0.9]])
    got = retrieval_metrics(scores, [{2}, {0, 4}, {3}])
    assert got["recall@1"] == pytest.approx((0 + 0.5 + 0) / 3)
    assert got["recall@5"] == pytest.approx(1.0) and got["recall@10"] == pytest.approx(1.0)
    assert got["mrr@10"] == pytest.approx((1 / 2 + 1 + 1 / 5) / 3)
    ndcg = [(1 / math.log2(3)) / 1,
            (1 + 1 / math.log2(5)) / (1 + 1 / math.log2(3)),
            (1 / math.log2(6)) / 1]
    assert got["ndcg@10"] == pytest.approx(sum(ndcg) / 3)
    assert (got["queries"], got["documents"]) == (3, 5)
    # hit@k: a relevant document anywhere in the top k (only query 1's is first); precision over the 5 ranked
    assert got["hit@1"] == pytest.approx(1 / 3) and got["hit@5"] == pytest.approx(1.0)
    assert got["precision@10"] == pytest.approx((1 / 5 + 2 / 5 + 1 / 5) / 3)


class _Sides:
    """A stand-in task handing fixed embeddings to the objectives."""

    def __init__(self, sides):
        self.sides = sides

    def pair_embeddings(self, model, batch):
        return self.sides


def test_losses_equal_sentence_transformers_per_anchor():
    torch.manual_seed(0)
    anchor, positive, negative = (torch.randn(6, 8) for _ in range(3))
    score = torch.rand(6)
    batch = {"anchor_input_ids": torch.zeros(6, 3), "score": score}
    ours = Contrastive(_Sides({"anchor": anchor, "positive": positive}), ContrastiveObjective())
    reference = losses.MultipleNegativesRankingLoss(None).compute_loss_from_embeddings([anchor, positive], None)
    assert float(ours.loss_sum(None, batch)) / 6 == pytest.approx(float(reference), rel=1e-6)
    hard = Contrastive(_Sides({"anchor": anchor, "positive": positive, "negative": negative}),
                       ContrastiveObjective(scale=10.0))
    reference = losses.MultipleNegativesRankingLoss(None, scale=10.0).compute_loss_from_embeddings(
        [anchor, positive, negative], None)
    assert float(hard.loss_sum(None, batch)) / 6 == pytest.approx(float(reference), rel=1e-6)
    triplet = Triplet(_Sides({"anchor": anchor, "positive": positive, "negative": negative}), TripletObjective())
    reference = losses.TripletLoss(None).compute_loss_from_embeddings([anchor, positive, negative], None)
    assert float(triplet.loss_sum(None, batch)) / 6 == pytest.approx(float(reference), rel=1e-6)
    cosine = CosineSimilarity(_Sides({"anchor": anchor, "positive": positive}), CosineSimilarityObjective())
    reference = losses.CosineSimilarityLoss(None).compute_loss_from_embeddings([anchor, positive], score)
    assert float(cosine.loss_sum(None, batch)) / 6 == pytest.approx(float(reference), rel=1e-6)


@pytest.mark.parametrize("how", ["mean", "cls", "max"])
def test_pooling_equals_sentence_transformers(how):
    torch.manual_seed(1)
    hidden, mask = torch.randn(3, 5, 8), torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    reference = Pooling(8, pooling_mode=how)({"token_embeddings": hidden, "attention_mask": mask})
    assert torch.allclose(pool(hidden, mask, how, False), reference["sentence_embedding"], atol=1e-6)
    assert torch.allclose(pool(hidden, mask, how, True).norm(dim=-1), torch.ones(3), atol=1e-6)


# ---- errors ---------------------------------------------------------------------------------
def test_objectives_and_columns_must_fit(tmp_path, pairs):
    cases = [({"objective": {"name": "triplet"}}, "objective triplet needs a negative per row"),
             ({"objective": {"name": "cosine-similarity"}}, "needs a score per pair"),
             ({"embedding": {"score_column": "score"}}, "embedding.score_column is read by the cosine-similarity"),
             ({"eval": {"metric": "spearman"}}, "eval.metric spearman is not measured on retrieval pairs")]
    for sections, message in cases:
        with pytest.raises(ConfigError, match=message):
            train(load_config(emb_config(tmp_path, pairs, **sections)))
    rows = pair_rows(96, 1)
    rows[5]["positive"] = "  "
    pairs["train"] = write_jsonl(tmp_path / "pairs" / "train.jsonl", rows)
    with pytest.raises(DataError, match=r"train.jsonl line 6: column 'positive' is empty"):
        train(load_config(emb_config(tmp_path, pairs)))
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").iterdir())


# ---- end to end -----------------------------------------------------------------------------
def test_contrastive_run_beats_its_base_and_saves_a_sentence_transformers_model(tmp_path, pairs):
    outcome = train(load_config(emb_config(tmp_path, pairs)))
    run, results = outcome.run, outcome.results
    assert train_losses(run)[:4] == pytest.approx(GOLDEN, abs=2e-5), train_losses(run)
    assert results["base"]["kind"] == "pretrained"
    assert results["test"]["ndcg@10"] > results["base"]["test"]["ndcg@10"] + 0.05
    assert results["test"]["documents"] == 30  # every distinct answer of the split is a candidate
    texts = ["goal match team", "vote minister", "answer about tech: chip code"]
    ours = np.array([p["embedding"] for p in load_predictor(run.path).predict(texts)])
    theirs = SentenceTransformer(str(run.model_dir), device="cpu").encode(texts)
    assert np.allclose(ours, theirs, atol=1e-5)
    again, _ = evaluate_run(run.path, pairs["test"])
    assert again["ndcg@10"] == pytest.approx(results["test"]["ndcg@10"], abs=1e-6)
    # search: the corpus's nearest documents by cosine, from an index built once and rebuilt on new bytes
    documents = [r["positive"] for r in pair_rows(30, 3)]
    corpus = write_jsonl(tmp_path / "corpus.jsonl", [{"text": d} for d in documents])
    found = search(run.path, ["goal match team"], corpus, top_k=3)[0]["results"]
    vectors = SentenceTransformer(str(run.model_dir), device="cpu").encode(documents, normalize_embeddings=True)
    query = SentenceTransformer(str(run.model_dir), device="cpu").encode(["goal match team"], normalize_embeddings=True)
    best = np.argsort(-(vectors @ query[0]), kind="stable")[:3]
    assert [hit["document"] for hit in found] == [documents[i] for i in best]
    assert [hit["score"] for hit in found] == pytest.approx((vectors @ query[0])[best].tolist(), abs=1e-5)
    stamp = (run.path / "indexes" / "corpus" / "embeddings.safetensors").stat().st_mtime_ns
    search(run.path, ["vote"], corpus)
    assert (run.path / "indexes" / "corpus" / "embeddings.safetensors").stat().st_mtime_ns == stamp  # reused
    write_jsonl(corpus, [{"text": d} for d in documents[:5]])
    assert len(search(run.path, ["vote"], corpus, top_k=10)[0]["results"]) == 5  # rebuilt for the new bytes


def test_hard_negatives_triplets_and_scored_pairs_train(tmp_path, pairs):
    hard = train(load_config(emb_config(tmp_path, pairs, name="hard", train={"epochs": 1},
                                        embedding={"negative_column": "negative"}))).results
    assert hard["test"]["documents"] == 60  # answers and hard negatives are both candidates
    triplet = train(load_config(emb_config(tmp_path, pairs, name="triplet", train={"epochs": 1},
                                           embedding={"negative_column": "negative"},
                                           objective={"name": "triplet", "distance": "cosine", "margin": 0.5})))
    assert train_losses(triplet.run)[0] > 0
    scored = {split: write_jsonl(tmp_path / "scored" / f"{split}.jsonl", pair_rows(n, seed, scored=True))
              for split, n, seed in [("train", 96, 1), ("validation", 30, 2)]}
    results = train(load_config(emb_config(tmp_path, scored, name="scored", train={"epochs": 4},
                                           embedding={"score_column": "score"},
                                           objective={"name": "cosine-similarity"}))).results
    assert results["validation"]["spearman"] > results["base"]["validation"]["spearman"]


def test_lora_adapter_without_merge_embeds_as_the_merged_model_and_retention_is_scored(tmp_path, pairs):
    other = write_jsonl(tmp_path / "other.jsonl", [{"anchor": f"{w} {w}", "positive": f"about {w}"}
                                                   for w in FILLER + WORDS["sport"]])
    runs = {}
    for merge in (True, False):
        runs[merge] = train(load_config(emb_config(
            tmp_path, pairs, name=f"lora-{merge}", method={"name": "lora", "r": 4, "merge": merge},
            train={"epochs": 1}, eval={"retention": [{"source": str(other), "name": "general"}]})))
    texts = ["goal match", "vote tax"]
    merged = load_predictor(runs[True].run.path).predict(texts)
    adapter = load_predictor(runs[False].run.path).predict(texts)
    assert np.allclose([m["embedding"] for m in merged], [a["embedding"] for a in adapter], atol=1e-5)
    kept = runs[True].results["retention"]["general"]
    assert kept["metric"] == "ndcg@10" and 0 <= kept["before"]["ndcg@10"] <= 1
    assert not Embedding.label_columns(load_config(emb_config(tmp_path, pairs)))


def test_an_evaluation_corpus_joins_the_ranking_and_leaves_training_alone(tmp_path, pairs):
    """embedding.corpus: every validation/test query is ranked against its split's answers plus the
    corpus documents (duplicates of an answer count once); the metrics equal a direct computation over
    the run's own embeddings, `tunelab eval` ranks the same collection, and training is unchanged."""
    test_rows = [json.loads(line) for line in pairs["test"].read_text().splitlines()]
    rng = random.Random(7)
    extra = [f"note on {topic}: " + " ".join(rng.choices(WORDS[topic], k=5)) for topic in TOPICS for _ in range(7)]
    corpus = write_jsonl(tmp_path / "corpus.jsonl", [{"body": t} for t in extra[:20]]
                         + [{"body": r["positive"]} for r in test_rows[:5]])
    outcome = train(load_config(emb_config(tmp_path, pairs, train={"max_steps": 4},
                                           embedding={"corpus": str(corpus), "corpus_column": "body"})))
    plain = train(load_config(emb_config(tmp_path, pairs, "plain", train={"max_steps": 4})))
    assert train_losses(outcome.run) == train_losses(plain.run)
    test = outcome.results["test"]
    assert (test["queries"], test["documents"]) == (30, 30 + 20)
    assert outcome.results["base"]["test"]["documents"] == 50

    predictor = load_predictor(outcome.run.path)
    questions = list(dict.fromkeys(r["anchor"] for r in test_rows))
    # in id order, as the evaluation ranks them: tied documents (texts the tiny tokenizer reads alike) rank alike
    documents = sorted(set([r["positive"] for r in test_rows] + extra[:20]), key=text_id)
    relevant = [{documents.index(r["positive"]) for r in test_rows if r["anchor"] == q} for q in questions]
    embed = lambda texts: np.array([p["embedding"] for p in predictor.predict(texts)])  # noqa: E731
    q, d = embed(questions), embed(documents)
    q, d = q / np.linalg.norm(q, axis=1, keepdims=True), d / np.linalg.norm(d, axis=1, keepdims=True)
    direct = retrieval_metrics(q @ d.T, relevant)
    for metric in ("ndcg@10", "mrr@10", "recall@1", "recall@10"):
        assert test[metric] == pytest.approx(direct[metric], abs=1e-5), metric
    again, _ = evaluate_run(outcome.run.path, pairs["test"])
    assert again["documents"] == 50 and again["ndcg@10"] == pytest.approx(test["ndcg@10"], abs=1e-6)
