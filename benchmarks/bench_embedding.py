"""tunelab vs sentence-transformers' own trainer: MiniLM-L6 retrieval tuning on the chatterbot FAQ pairs,
side by side in one run.

Same model, pairs, loss (in-batch negatives, scale 20: MultipleNegativesRankingLoss), batch size,
learning rate and schedule, seed and number of steps. Each side trains in its own fresh process (so
peak RSS is that side's alone) with the same torch thread count; both are then scored by one evaluator
(sentence-transformers' InformationRetrievalEvaluator over the test questions and every distinct answer
of the test split), so recall@10 is measured the same way on both. Prints pairs/s, peak RSS, recall@10
and nDCG@10, and the tunelab/ST ratios.

    python benchmarks/bench_embedding.py               # 940 training pairs, 1 epoch, batch 32
    python benchmarks/bench_embedding.py --epochs 2
    python benchmarks/bench_embedding.py --st-bf16     # the ST side with bf16 autocast too
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from _harness import add_worker_args, emit, measure, run_side  # benchmarks/ is on sys.path: scripts run as files

HERE = Path(__file__).resolve().parent
DATA = HERE / ".data" / "faq"


def prepare_data() -> None:
    from tunelab.data.corpora import CORPORA

    if not (DATA / "train.jsonl").exists():
        CORPORA.get("chatterbot-faq")(DATA)


def settings(args: argparse.Namespace) -> dict:
    return {"data": str(DATA), "epochs": args.epochs, "batch_size": 32, "learning_rate": 2e-5,
            "warmup_ratio": 0.1, "weight_decay": 0.01, "max_grad_norm": 1.0, "scale": 20.0, "seed": 0,
            "max_length": 64, "threads": args.threads, "st_bf16": args.st_bf16}


def _rows(split: str) -> list[dict]:
    return [json.loads(line) for line in (DATA / f"{split}.jsonl").read_text().splitlines()]


def score(model_dir: str) -> dict:
    """recall@10 and nDCG@10 of a saved sentence-transformers folder, by ST's own evaluator."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.evaluation import InformationRetrievalEvaluator

    rows = _rows("test")
    questions = {f"q{i}": text for i, text in enumerate(dict.fromkeys(r["anchor"] for r in rows))}
    answers = {f"d{i}": text for i, text in enumerate(dict.fromkeys(r["positive"] for r in rows))}
    qid, did = {t: k for k, t in questions.items()}, {t: k for k, t in answers.items()}
    relevant: dict[str, set[str]] = {}
    for r in rows:
        relevant.setdefault(qid[r["anchor"]], set()).add(did[r["positive"]])
    evaluator = InformationRetrievalEvaluator(questions, answers, relevant, name="faq", show_progress_bar=False)
    found = evaluator(SentenceTransformer(model_dir, device="cpu"))
    return {"recall@10": found["faq_cosine_recall@10"], "ndcg@10": found["faq_cosine_ndcg@10"]}


# ---- the two workers (run in child processes) --------------------------------------------------
def run_tunelab(s: dict) -> dict:
    from tunelab.config import validate
    from tunelab.logs import quiet_third_party
    from tunelab.recipes.train import train

    quiet_third_party()
    config = validate({
        "task": "embedding", "model": {"source": "minilm-l6"},
        "data": {"train": f"{s['data']}/train.jsonl", "validation": f"{s['data']}/validation.jsonl",
                 "test": f"{s['data']}/test.jsonl"},
        "objective": {"name": "contrastive", "scale": s["scale"]},
        "train": {"epochs": s["epochs"], "batch_size": s["batch_size"], "learning_rate": s["learning_rate"],
                  "warmup_ratio": s["warmup_ratio"], "weight_decay": s["weight_decay"],
                  "max_grad_norm": s["max_grad_norm"], "seed": s["seed"], "max_length": s["max_length"],
                  "log_every": 1000, "checkpoint_every": 100000},
        # One evaluation at the end (the ST side has none during training); its time is not counted.
        "eval": {"metric": "ndcg@10", "load_best": False, "every_steps": 100000, "base": False},
        "output": {"dir": str(DATA.parent / "runs"), "name": "bench-embedding"},
    })
    outcome = train(config)
    rows = outcome.run.read_json("data.json")["rows"]["train"]
    return {"train_seconds": outcome.fit.step_seconds, "train_rows": rows,
            "model": str(outcome.run.path / "model"), "precision": outcome.run.read_json("run.json")["precision"]}


def run_st(s: dict) -> dict:
    from datasets import Dataset
    from sentence_transformers import (SentenceTransformer, SentenceTransformerTrainer,
                                       SentenceTransformerTrainingArguments, losses)
    from sentence_transformers.training_args import BatchSamplers
    from transformers.utils import logging as hf_logging

    from tunelab.config.schema import ModelConfig
    from tunelab.models import resolve_model

    hf_logging.set_verbosity_error()
    model = SentenceTransformer(str(resolve_model(ModelConfig(source="minilm-l6")).path), device="cpu")
    model.max_seq_length = s["max_length"]
    train = Dataset.from_list([{"anchor": r["anchor"], "positive": r["positive"]} for r in _rows("train")])
    out = DATA.parent / "st-out"
    args = SentenceTransformerTrainingArguments(
        output_dir=str(out), num_train_epochs=s["epochs"], per_device_train_batch_size=s["batch_size"],
        learning_rate=s["learning_rate"], warmup_ratio=s["warmup_ratio"], weight_decay=s["weight_decay"],
        max_grad_norm=s["max_grad_norm"], lr_scheduler_type="linear", seed=s["seed"], eval_strategy="no",
        save_strategy="no", report_to=[], logging_strategy="no", dataloader_num_workers=0, use_cpu=True,
        # BATCH_SAMPLER: shuffled batches, as tunelab draws them
        disable_tqdm=True, bf16=s["st_bf16"], batch_sampler=BatchSamplers.BATCH_SAMPLER,
    )
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=train,
                                         loss=losses.MultipleNegativesRankingLoss(model, scale=s["scale"]))
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    model.save(str(out / "model"))
    return {"train_seconds": seconds, "train_rows": len(train), "model": str(out / "model"),
            "precision": "bf16" if s["st_bf16"] else "fp32"}


WORKERS = {"tunelab": run_tunelab, "st": run_st}


def worker(name: str, s: dict) -> None:
    result = run_side(WORKERS[name], s)
    result["pairs_per_s"] = result["train_rows"] * s["epochs"] / result["train_seconds"]
    result.update(score(result["model"]))
    emit(result)


# ---- the parent: _harness.measure runs each side in its own process ----------------------------------
def report(s: dict, ours: dict, theirs: dict) -> None:
    print(f"\n== MiniLM-L6 retrieval tuning: {ours['train_rows']} FAQ pairs x {s['epochs']} epoch(s), batch "
          f"{s['batch_size']}, in-batch negatives (scale {s['scale']:g}), max_length {s['max_length']}, "
          f"{s['threads']} threads; precision tunelab {ours['precision']} (train.precision: auto), ST "
          f"{theirs['precision']}")
    print(f"{'':22}{'tunelab':>12}{'ST trainer':>12}{'ratio':>10}")
    rows = [("throughput pairs/s", "pairs_per_s", "{:.2f}"), ("peak RSS MB", "peak_rss_mb", "{:.0f}"),
            ("test recall@10", "recall@10", "{:.4f}"), ("test nDCG@10", "ndcg@10", "{:.4f}")]
    for label, key, fmt in rows:
        quality = key in ("recall@10", "ndcg@10")
        shown = f"{ours[key] - theirs[key]:+.4f}" if quality else f"{ours[key] / theirs[key]:.2f}x"
        print(f"{label:22}{fmt.format(ours[key]):>12}{fmt.format(theirs[key]):>12}{shown:>10}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--st-bf16", action="store_true", help="ST trainer with bf16=True (default: its fp32)")
    add_worker_args(parser)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, json.loads(args.settings))
        return
    prepare_data()
    s = settings(args)
    theirs = measure(__file__, "st", s)
    ours = measure(__file__, "tunelab", s)
    report(s, ours, theirs)
    print("raw: " + json.dumps({"tunelab": ours, "st": theirs}))


if __name__ == "__main__":
    main()
