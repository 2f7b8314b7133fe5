"""tunelab vs TRL DPOTrainer: DPO with LoRA on SmolLM2-135M-Instruct, bbc-headline-pairs, side by side.

Same model, LoRA (r 16, alpha 32, dropout 0, q_proj/v_proj), the first N preference pairs in TRL's
conversational layout (`tunelab data example bbc-headline-pairs`), the model's own chat template, beta
0.1 (sigmoid loss), batch 8 pairs, max_length 256, learning rate 5e-5 linear, seed 0, fp32, one epoch.
Each side runs in its own fresh process (peak RSS is that side's alone) with the same thread count.

- tunelab: `tunelab train` with `objective: dpo`; the reference (adapter off) scores every pair once
  before step 1, and each step is one forward over the 2n chosen + rejected sequences.
- TRL (default): DPOTrainer with `peft_config`; each step runs the policy forward and, under no_grad
  with the adapter disabled, a reference forward.
- TRL (precompute): `precompute_ref_log_probs=True`, TRL's own way to score the reference once.

Printed: pairs/s over the training steps only (tunelab's steps time vs the time inside
`trainer.train()` — for the precomputing sides, the reference pass is reported apart), the whole
process time, peak RSS, and the validation reward accuracy each side reports on the same held-out
pairs, with tunelab/TRL ratios. Timings are printed, never asserted.

    python benchmarks/bench_preference.py                 # 64 pairs, 8 steps
    python benchmarks/bench_preference.py --pairs 160 --threads 1

Requires TRL: `pip install -e '.[bench]'`.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from _harness import add_worker_args, emit, measure, run_side  # benchmarks/ is on sys.path: scripts run as files

DATA = Path(os.environ.get("TUNELAB_BENCH_DATA", "/tmp/tunelab-bench-preference"))
BATCH, MAX_LENGTH, LR, BETA = 8, 256, 5e-5, 0.1


def prepare_data(pairs: int, held_out: int) -> dict[str, str]:
    from tunelab.data.corpora import CORPORA

    full = DATA / "pairs"
    if not (full / "train.jsonl").is_file():
        CORPORA.get("bbc-headline-pairs")(full)
    files = {}
    for split, n in (("train", pairs), ("validation", held_out)):
        rows = (full / f"{split}.jsonl").read_text().splitlines()[:n]
        path = DATA / f"{split}-{n}.jsonl"
        path.write_text("\n".join(rows) + "\n")
        files[split] = str(path)
    return files


def run_tunelab(s: dict) -> dict:
    from tunelab.config import validate
    from tunelab.recipes.train import train

    config = validate({
        "task": "causal-lm", "model": {"source": "smollm2-135m-instruct"},
        "data": {"train": s["train"], "validation": s["validation"], "test": s["validation"],
                 "records": "chat-preference"},
        "lm": {"template": "auto"},
        "objective": {"name": "dpo", "beta": BETA},
        "method": {"name": "lora", "r": 16, "alpha": 32, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]},
        "train": {"epochs": 1, "batch_size": BATCH, "learning_rate": LR, "warmup_ratio": 0.0, "weight_decay": 0.0,
                  "max_grad_norm": 1.0, "max_length": MAX_LENGTH, "precision": "fp32", "seed": 0,
                  "log_every": 1000, "checkpoint_every": 100000, "group_by_length": False},
        "eval": {"every_steps": 100000, "load_best": False, "generate_samples": 0, "retention": [], "base": False},
        "output": {"dir": str(DATA / "runs"), "name": "bench"},
    })
    outcome = train(config)
    reference = outcome.run.read_json("run.json").get("reference", {})
    return {"train_seconds": outcome.fit.step_seconds, "reference_seconds": reference.get("seconds"),
            "reward_accuracy": outcome.results["validation"]["reward_accuracy"],
            "pairs": outcome.run.read_json("data.json")["samples"]["train"]}


def run_trl(s: dict, precompute: bool) -> dict:
    import torch
    from datasets import load_dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging
    from trl import DPOConfig, DPOTrainer

    from tunelab.config.schema import ModelConfig
    from tunelab.models import resolve_model

    hf_logging.set_verbosity_error()
    path = resolve_model(ModelConfig(source="smollm2-135m-instruct")).path
    tokenizer = AutoTokenizer.from_pretrained(path)
    raw = load_dataset("json", data_files={"train": s["train"], "validation": s["validation"]},
                       cache_dir=str(DATA / "hf-cache"))
    raw = raw.remove_columns([c for c in raw["train"].column_names if c not in ("prompt", "chosen", "rejected")])
    # TRL's conversational layout wants each answer as a one-message list (tunelab reads both forms)
    raw = raw.map(lambda r: {side: [{"role": "assistant", "content": r[side]}] for side in ("chosen", "rejected")})
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    args = DPOConfig(
        output_dir=str(DATA / "trl-out"), per_device_train_batch_size=BATCH, per_device_eval_batch_size=2 * BATCH,
        num_train_epochs=1, learning_rate=LR, lr_scheduler_type="linear", warmup_steps=0, weight_decay=0.0,
        max_grad_norm=1.0, seed=0, bf16=False, fp16=False, gradient_checkpointing=False, beta=BETA,
        loss_type=["sigmoid"], max_length=MAX_LENGTH, precompute_ref_log_probs=precompute, eval_strategy="no",
        save_strategy="no", logging_strategy="no", report_to=[], use_cpu=True, dataloader_num_workers=0,
        disable_tqdm=True,
    )
    peft_config = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=["q_proj", "v_proj"],
                             task_type="CAUSAL_LM")
    trainer = DPOTrainer(model=model, args=args, train_dataset=raw["train"], eval_dataset=raw["validation"],
                         processing_class=tokenizer, peft_config=peft_config)
    reference_seconds = None
    if precompute:  # TRL scores the reference lazily on the first dataloader pass: time it apart
        started = time.perf_counter()
        trainer.get_train_dataloader()
        reference_seconds = time.perf_counter() - started
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    metrics = trainer.evaluate()
    accuracy = metrics.get("eval_rewards/accuracies")
    return {"train_seconds": seconds, "reference_seconds": reference_seconds, "reward_accuracy": accuracy,
            "pairs": len(raw["train"])}


WORKERS = {"tunelab": run_tunelab, "trl": lambda s: run_trl(s, False), "trl-precompute": lambda s: run_trl(s, True)}


def worker(name: str, s: dict) -> None:
    result = run_side(WORKERS[name], s)
    result["pairs_per_s"] = result["pairs"] / result["train_seconds"]
    emit(result)


def report(s: dict, results: dict[str, dict]) -> None:
    ours = results["tunelab"]
    print(f"\n== DPO, LoRA r16 on SmolLM2-135M-Instruct: {ours['pairs']} pairs x 1 epoch, batch {BATCH}, max_length "
          f"{MAX_LENGTH}, fp32, {s['threads']} threads")
    peers = [n for n in results if n != "tunelab"]
    print(f"{'':24}{'tunelab':>12}" + "".join(f"{n:>16}{'ratio':>8}" for n in peers))
    rows = [("train pairs/s", "pairs_per_s", "{:.2f}"), ("whole process s", "process_seconds", "{:.1f}"),
            ("peak RSS MB", "peak_rss_mb", "{:.0f}"), ("val reward accuracy", "reward_accuracy", "{:.3f}")]
    for label, key, fmt in rows:
        line = f"{label:24}{fmt.format(ours[key]):>12}"
        for n in peers:
            theirs = results[n][key]
            ratio = f"{ours[key] - theirs:+.3f}" if key == "reward_accuracy" else f"{ours[key] / theirs:.2f}x"
            line += f"{fmt.format(theirs):>16}{ratio:>8}"
        print(line)
    shown = {n: r.get("reference_seconds") for n, r in results.items() if r.get("reference_seconds") is not None}
    if shown:
        print("reference pass (s, not in pairs/s): " + ", ".join(f"{n} {v:.1f}" for n, v in shown.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=64)
    parser.add_argument("--held-out", type=int, default=32)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--peers", default="trl,trl-precompute")
    add_worker_args(parser)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, json.loads(args.settings))
        return
    s = {**prepare_data(args.pairs, args.held_out), "threads": args.threads}
    results = {name: measure(__file__, name, s) for name in ["tunelab", *args.peers.split(",")]}
    report(s, results)
    print("raw: " + json.dumps(results))


if __name__ == "__main__":
    main()
