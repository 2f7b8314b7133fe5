"""tunelab vs HF Trainer: MiniLM-L6 NER on the packaged clinical corpus, side by side in one run.

Same model, words and tags (both sides read the corpus through tunelab's normalizer, so they see
identical sentences), hyperparameters, seed, epochs and label alignment (first sub-token). Each side
runs in its own process with the same torch thread count. Prints throughput (training steps only),
peak RSS and entity-level F1 (seqeval, micro) on the test split, and the tunelab/HF ratios.

    python benchmarks/bench_token_classification.py
    python benchmarks/bench_token_classification.py --epochs 2 --threads 2 --seeds 0 1 2

With several seeds, each side runs once per seed and the table shows the means (entity F1 on a
43-sentence test set moves by several points between seeds; compare means, not single runs).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from _harness import add_worker_args, emit, measure, run_side  # benchmarks/ is on sys.path: scripts run as files

HERE = Path(__file__).resolve().parent
DATA = HERE / ".data" / "clinical"


def prepare_data() -> None:
    from tunelab.data.corpora import CORPORA

    if not (DATA / "train.conll").exists():
        CORPORA.get("clinical-ner")(DATA)


def settings(args: argparse.Namespace) -> dict:
    return {"epochs": args.epochs, "batch_size": 16, "learning_rate": 1e-4, "warmup_ratio": 0.1,
            "weight_decay": 0.01, "max_grad_norm": 1.0, "seed": 0, "max_length": 128, "threads": args.threads}


def read_split(split: str) -> list[dict]:
    """Words and BIO tags of one split, through tunelab's normalizer (identical for both sides)."""
    from tunelab.config.schema import DataConfig
    from tunelab.data import load_table, normalize_token_rows

    file = DATA / ("test.jsonl" if split == "test" else f"{split}.conll")
    cfg = DataConfig(train=str(file))
    rows, _ = normalize_token_rows(load_table(file, cfg, split), cfg)
    return [{"tokens": r["tokens"], "tags": r["tags"]} for r in rows]


# ---- the two workers (run in child processes) --------------------------------------------------
def run_tunelab(s: dict) -> dict:
    from tunelab.config import validate
    from tunelab.logs import quiet_third_party
    from tunelab.recipes.train import train

    quiet_third_party()
    config = validate({
        "task": "token-classification", "model": {"source": "minilm-l6"},
        "data": {"train": str(DATA / "train.conll"), "validation": str(DATA / "validation.conll"),
                 "test": str(DATA / "test.jsonl")},
        "train": {"epochs": s["epochs"], "batch_size": s["batch_size"], "learning_rate": s["learning_rate"],
                  "warmup_ratio": s["warmup_ratio"], "weight_decay": s["weight_decay"],
                  "max_grad_norm": s["max_grad_norm"], "seed": s["seed"], "max_length": s["max_length"],
                  "log_every": 1000, "checkpoint_every": 100000, "group_by_length": s.get("group_by_length", True)},
        "eval": {"metric": "f1", "load_best": False, "every_steps": 100000},
        "output": {"dir": str(DATA / "runs"), "name": "bench"},
    })
    outcome = train(config)
    rows = outcome.run.read_json("data.json")["rows"]["train"]
    return {"train_seconds": outcome.fit.step_seconds, "train_rows": rows, "test_f1": outcome.results["test"]["f1"]}


def run_hf(s: dict) -> dict:
    import numpy as np
    from datasets import Dataset
    from seqeval.metrics import f1_score
    from transformers import (AutoModelForTokenClassification, AutoTokenizer, DataCollatorForTokenClassification,
                              Trainer, TrainingArguments)
    from transformers.utils import logging as hf_logging

    from tunelab.config.schema import ModelConfig
    from tunelab.models import resolve_model

    hf_logging.set_verbosity_error()
    path = resolve_model(ModelConfig(source="minilm-l6")).path
    train_rows, test_rows = read_split("train"), read_split("test")
    kinds = sorted({t[2:] for r in train_rows + test_rows for t in r["tags"] if t != "O"})
    labels = ["O"] + [f"{p}-{k}" for k in kinds for p in "BI"]
    ids = {name: i for i, name in enumerate(labels)}
    tokenizer = AutoTokenizer.from_pretrained(path)

    def encode(batch):  # the HF token-classification recipe: label the first sub-token of each word
        enc = tokenizer(batch["tokens"], is_split_into_words=True, truncation=True, max_length=s["max_length"])
        enc["labels"] = []
        for i, tags in enumerate(batch["tags"]):
            previous, row = None, []
            for word in enc.word_ids(i):
                row.append(-100 if word is None or word == previous else ids[tags[word]])
                previous = word
            enc["labels"].append(row)
        return enc

    train = Dataset.from_list(train_rows).map(encode, batched=True, remove_columns=["tokens", "tags"])
    test = Dataset.from_list(test_rows).map(encode, batched=True, remove_columns=["tokens", "tags"])
    model = AutoModelForTokenClassification.from_pretrained(
        path, num_labels=len(labels), id2label=dict(enumerate(labels)), label2id=ids)
    steps = -(-len(train) // s["batch_size"]) * s["epochs"]
    args = TrainingArguments(
        output_dir=str(DATA / "hf-out"), per_device_train_batch_size=s["batch_size"],
        per_device_eval_batch_size=2 * s["batch_size"], num_train_epochs=s["epochs"],
        learning_rate=s["learning_rate"], warmup_steps=int(s["warmup_ratio"] * steps),
        weight_decay=s["weight_decay"], max_grad_norm=s["max_grad_norm"], lr_scheduler_type="linear",
        seed=s["seed"], eval_strategy="no", save_strategy="no", report_to=[], logging_strategy="no",
        dataloader_num_workers=0, use_cpu=True, disable_tqdm=True,
    )
    trainer = Trainer(model=model, args=args, train_dataset=train,
                      data_collator=DataCollatorForTokenClassification(tokenizer))
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    out = trainer.predict(test)
    predictions = np.argmax(out.predictions, -1)
    gold, pred = [], []
    for p_row, l_row in zip(predictions, out.label_ids, strict=True):
        keep = l_row != -100
        gold.append([labels[i] for i in l_row[keep]])
        pred.append([labels[i] for i in p_row[keep]])
    return {"train_seconds": seconds, "train_rows": len(train), "test_f1": float(f1_score(gold, pred))}


WORKERS = {"tunelab": run_tunelab, "hf": run_hf}


def worker(name: str, s: dict) -> None:
    result = run_side(WORKERS[name], s)
    result["samples_per_s"] = result["train_rows"] * s["epochs"] / result["train_seconds"]
    emit(result)


# ---- the parent: _harness.measure runs each side in its own process ----------------------------------
def report(s: dict, ours: dict, theirs: dict) -> None:
    print(f"\n== clinical NER: MiniLM-L6 full fine-tuning, {ours['train_rows']:.0f} train sentences x {s['epochs']} "
          f"epoch(s), max_length {s['max_length']}, batch {s['batch_size']}, {s['threads']} threads, "
          f"mean of seeds {s['seeds']}")
    print(f"{'':22}{'tunelab':>12}{'HF Trainer':>12}{'ratio':>10}")
    for label, key, fmt in (("throughput samples/s", "samples_per_s", "{:.2f}"), ("peak RSS MB", "peak_rss_mb", "{:.0f}"),
                            ("test entity F1", "test_f1", "{:.4f}")):
        shown = f"{ours[key] - theirs[key]:+.4f}" if key == "test_f1" else f"{ours[key] / theirs[key]:.2f}x"
        print(f"{label:22}{fmt.format(ours[key]):>12}{fmt.format(theirs[key]):>12}{shown:>10}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    add_worker_args(parser)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, json.loads(args.settings))
        return
    prepare_data()
    runs: dict[str, list[dict]] = {"tunelab": [], "hf": []}
    for seed in args.seeds:
        s = {**settings(args), "seed": seed}
        for name in ("hf", "tunelab"):
            runs[name].append(measure(__file__, name, s))
    ours, theirs = (mean(runs[name]) for name in ("tunelab", "hf"))
    report({**settings(args), "seeds": args.seeds}, ours, theirs)
    print("per seed: " + json.dumps({name: [round(r["test_f1"], 4) for r in rs] for name, rs in runs.items()}))
    print("raw: " + json.dumps(runs))


def mean(results: list[dict]) -> dict:
    """Per-key means; peak RSS is the worst run's."""
    out = {k: sum(r[k] for r in results) / len(results) for k in results[0]}
    out["peak_rss_mb"] = max(r["peak_rss_mb"] for r in results)
    return out


if __name__ == "__main__":
    main()
