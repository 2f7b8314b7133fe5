"""tunelab vs HF Trainer: full fine-tuning of MiniLM-L6 on BBC News, side by side in one run.

Same model, data, hyperparameters, seed and number of samples. Each side runs in its own fresh
process (so peak RSS is that side's alone) with the same torch thread count. Prints throughput,
peak RSS and test accuracy, and the tunelab/HF ratios.

    python benchmarks/bench_text_classification.py                 # articles (max_length 256) + short texts
    python benchmarks/bench_text_classification.py --rows 400      # quicker
    python benchmarks/bench_text_classification.py --variant short

Variants: `articles` (full article text, max_length 256) and `short` (the first sentence of each
article body: short texts of varied length, where length-grouped batches avoid padding).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import time
from pathlib import Path

from _harness import add_worker_args, emit, measure, run_side  # benchmarks/ is on sys.path: scripts run as files

HERE = Path(__file__).resolve().parent
DATA = HERE / ".data"


def prepare_data() -> None:
    """Materialize BBC News and a short-text variant (first sentence of the body) under benchmarks/.data."""
    from tunelab.data.corpora import bbc_news

    articles = DATA / "articles"
    if not (articles / "train.jsonl").exists():
        bbc_news(articles)
    short = DATA / "short"
    short.mkdir(parents=True, exist_ok=True)
    for split in ("train", "validation", "test"):
        with open(articles / f"{split}.jsonl") as src, open(short / f"{split}.jsonl", "w") as dst:
            for line in src:
                row = json.loads(line)
                body = row["text"].split("\n", 1)[-1].strip()
                row["text"] = re.split(r"(?<=[.!?])\s", body, maxsplit=1)[0]
                dst.write(json.dumps(row) + "\n")


def settings(args: argparse.Namespace, variant: str) -> dict:
    return {"data": str(DATA / variant), "rows": args.rows, "epochs": args.epochs, "batch_size": 16,
            "learning_rate": 1e-4, "warmup_ratio": 0.1, "weight_decay": 0.01, "max_grad_norm": 1.0,
            "seed": 0, "max_length": 256 if variant == "articles" else 128, "threads": args.threads,
            "hf_bf16": args.hf_bf16}


# ---- the two workers (run in child processes) --------------------------------------------------
def run_tunelab(s: dict) -> dict:
    from tunelab.config import validate
    from tunelab.logs import quiet_third_party
    from tunelab.recipes.train import train

    quiet_third_party()
    config = validate({
        "task": "text-classification", "model": {"source": "minilm-l6"},
        "data": {"train": f"{s['data']}/train.jsonl", "validation": f"{s['data']}/validation.jsonl",
                 "test": f"{s['data']}/test.jsonl", "max_rows": s["rows"]},
        "train": {"epochs": s["epochs"], "batch_size": s["batch_size"], "learning_rate": s["learning_rate"],
                  "warmup_ratio": s["warmup_ratio"], "weight_decay": s["weight_decay"],
                  "max_grad_norm": s["max_grad_norm"], "seed": s["seed"], "max_length": s["max_length"],
                  "log_every": 1000, "checkpoint_every": 100000},
        # One evaluation at the end, like the HF side; the time it takes is reported apart.
        "eval": {"metric": "accuracy", "load_best": False, "every_steps": 100000},
        "output": {"dir": str(DATA / "runs"), "name": "bench"},
    })
    outcome = train(config)
    rows = outcome.run.read_json("data.json")["rows"]["train"]
    # Training steps only: the HF side times trainer.train() with no evaluation and no saving.
    return {"train_seconds": outcome.fit.step_seconds, "train_rows": rows,
            "test_accuracy": outcome.results["test"]["accuracy"],
            "precision": outcome.run.read_json("run.json")["precision"]}


def run_hf(s: dict) -> dict:
    import numpy as np
    from datasets import load_dataset
    from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding,
                              Trainer, TrainingArguments)
    from transformers.utils import logging as hf_logging

    from tunelab.models import resolve_model
    from tunelab.config.schema import ModelConfig

    hf_logging.set_verbosity_error()
    path = resolve_model(ModelConfig(source="minilm-l6")).path
    files = {split: f"{s['data']}/{split}.jsonl" for split in ("train", "test")}
    raw = load_dataset("json", data_files=files, cache_dir=str(DATA / "hf-cache"))
    if s["rows"]:
        raw["train"] = raw["train"].select(range(min(s["rows"], len(raw["train"]))))
        raw["test"] = raw["test"].select(range(min(s["rows"], len(raw["test"]))))
    labels = sorted(set(raw["train"]["label"]))
    tokenizer = AutoTokenizer.from_pretrained(path)

    def encode(batch):
        enc = tokenizer(batch["text"], truncation=True, max_length=s["max_length"])
        enc["labels"] = [labels.index(v) for v in batch["label"]]
        return enc

    data = raw.map(encode, batched=True, remove_columns=raw["train"].column_names)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=len(labels))
    args = TrainingArguments(
        output_dir=str(DATA / "hf-out"), per_device_train_batch_size=s["batch_size"],
        per_device_eval_batch_size=2 * s["batch_size"], num_train_epochs=s["epochs"],
        learning_rate=s["learning_rate"], warmup_steps=s["warmup_ratio"], weight_decay=s["weight_decay"],
        max_grad_norm=s["max_grad_norm"], lr_scheduler_type="linear", seed=s["seed"], eval_strategy="no",
        save_strategy="no", report_to=[], logging_strategy="no", dataloader_num_workers=0, use_cpu=True,
        disable_tqdm=True, bf16=s["hf_bf16"],
    )
    trainer = Trainer(model=model, args=args, train_dataset=data["train"],
                      data_collator=DataCollatorWithPadding(tokenizer))
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    predictions = trainer.predict(data["test"])
    accuracy = float((np.argmax(predictions.predictions, -1) == predictions.label_ids).mean())
    return {"train_seconds": seconds, "train_rows": len(data["train"]), "test_accuracy": accuracy,
            "precision": "bf16" if s["hf_bf16"] else "fp32"}


WORKERS = {"tunelab": run_tunelab, "hf": run_hf}


def worker(name: str, s: dict) -> None:
    result = run_side(WORKERS[name], s)
    result["samples_per_s"] = result["train_rows"] * s["epochs"] / result["train_seconds"]
    emit(result)


# ---- the parent: _harness.measure runs each side in its own process ----------------------------------
def report(variant: str, s: dict, ours: dict, theirs: dict) -> None:
    print(f"\n== {variant}: MiniLM-L6 full fine-tuning, {ours['train_rows']} train rows x {s['epochs']} epoch(s), "
          f"max_length {s['max_length']}, batch {s['batch_size']}, {s['threads']} threads; precision tunelab "
          f"{ours['precision']} (train.precision: auto), HF {theirs['precision']}")
    print(f"{'':22}{'tunelab':>12}{'HF Trainer':>12}{'ratio':>10}")
    rows = [("throughput samples/s", "samples_per_s", "{:.2f}", lambda a, b: a / b),
            ("peak RSS MB", "peak_rss_mb", "{:.0f}", lambda a, b: a / b),
            ("test accuracy", "test_accuracy", "{:.4f}", lambda a, b: a - b)]
    for label, key, fmt, ratio in rows:
        r = ratio(ours[key], theirs[key])
        shown = f"{r:+.4f}" if key == "test_accuracy" else f"{r:.2f}x"
        print(f"{label:22}{fmt.format(ours[key]):>12}{fmt.format(theirs[key]):>12}{shown:>10}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", choices=["articles", "short", "both"], default="both")
    parser.add_argument("--rows", type=int, default=None, help="train rows (default: all 1,700)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--hf-bf16", action="store_true", help="HF Trainer with bf16=True (default: its fp32)")
    add_worker_args(parser)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, json.loads(args.settings))
        return
    prepare_data()
    for variant in (["articles", "short"] if args.variant == "both" else [args.variant]):
        s = settings(args, variant)
        theirs = measure(__file__, "hf", s)
        ours = measure(__file__, "tunelab", s)
        report(variant, s, ours, theirs)
        print("raw: " + json.dumps({"tunelab": ours, "hf": theirs}))


if __name__ == "__main__":
    main()
