"""tunelab vs TRL GRPOTrainer: GRPO on a tiny task with a built-in reward, side by side.

The task: plain-text prompts "Color of item i?" (48 of them) answered by the tiny random Llama of
tunelab's catalog (full fine-tuning), 4 new tokens per answer, 8 answers per prompt, 8 prompts per step
(64 answers), temperature 1, no top-k, beta 0, loss_type dapo, group-scaled advantages, AdamW lr 1e-2
linear, seed 0, fp32. The reward: 1 when the answer starts with a lowercase letter — tunelab's
built-in `regex` reward (`^[a-z]`, searched in the stripped answer), and the same regex as a TRL reward
function. Each side runs in its own fresh process with the same thread count.

Printed: prompts/s over the training steps (tunelab's steps time vs the time inside
`trainer.train()`), peak RSS, and the mean sampled reward of the first and last 5 steps, with
tunelab/TRL ratios. The random model starts near 0.1 (26 of 259 byte tokens are lowercase letters).
Timings are printed, never asserted.

    python benchmarks/bench_grpo.py                 # 20 steps
    python benchmarks/bench_grpo.py --steps 40 --threads 1

Requires TRL: `pip install -e '.[bench]'`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import time
from pathlib import Path

from _harness import add_worker_args, emit, measure, run_side  # benchmarks/ is on sys.path: scripts run as files

DATA = Path(os.environ.get("TUNELAB_BENCH_DATA", "/tmp/tunelab-bench-grpo"))
PROMPTS, GROUP, BATCH, NEW_TOKENS, LR = 48, 8, 8, 4, 1e-2
PATTERN = r"^[a-z]"


def prepare_data() -> str:
    DATA.mkdir(parents=True, exist_ok=True)
    path = DATA / "prompts.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"Color of item {i}?"}) + "\n" for i in range(PROMPTS)))
    return str(path)


def run_tunelab(s: dict) -> dict:
    from tunelab.config import validate
    from tunelab.recipes.train import train

    config = validate({
        "task": "causal-lm", "model": {"source": "tiny-random-llama"},
        "data": {"train": s["data"], "records": "prompt-only"},  # validation and test split from train
        "objective": {"name": "grpo", "num_generations": GROUP, "max_new_tokens": NEW_TOKENS, "temperature": 1.0,
                      "beta": 0.0, "loss_type": "dapo", "rewards": [{"name": "regex", "pattern": PATTERN}]},
        "method": {"name": "full"},
        "train": {"max_steps": s["steps"], "batch_size": BATCH, "learning_rate": LR, "warmup_ratio": 0.0,
                  "weight_decay": 0.0, "max_grad_norm": 1.0, "max_length": 64, "precision": "fp32", "seed": 0,
                  "log_every": 1, "checkpoint_every": 100000},
        "eval": {"every_steps": 100000, "load_best": False, "retention": [], "base": False},
        "output": {"dir": str(DATA / "runs"), "name": "bench"},
    })
    outcome = train(config)
    rewards = [r["reward"] for r in map(json.loads, (outcome.run.path / "metrics.jsonl").read_text().splitlines())
               if "split" not in r]
    return {"train_seconds": outcome.fit.step_seconds, "rewards": rewards}


def run_trl(s: dict) -> dict:
    import torch
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from transformers.utils import logging as hf_logging
    from trl import GRPOConfig, GRPOTrainer

    from tunelab.config.schema import ModelConfig
    from tunelab.models import resolve_model

    hf_logging.set_verbosity_error()
    path = resolve_model(ModelConfig(source="tiny-random-llama")).path
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    dataset = load_dataset("json", data_files=s["data"], cache_dir=str(DATA / "hf-cache"))["train"]
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    pattern = re.compile(PATTERN)

    def starts_lowercase(completions, **_):
        return [1.0 if pattern.search(c.strip()) else 0.0 for c in completions]

    args = GRPOConfig(
        output_dir=str(DATA / "trl-out"), per_device_train_batch_size=BATCH * GROUP, num_generations=GROUP,
        max_completion_length=NEW_TOKENS, temperature=1.0, top_k=0, top_p=1.0, beta=0.0, loss_type="dapo",
        max_steps=s["steps"], learning_rate=LR, lr_scheduler_type="linear", warmup_steps=0, weight_decay=0.0,
        max_grad_norm=1.0, seed=0, bf16=False, fp16=False, gradient_checkpointing=False, logging_steps=1,
        save_strategy="no", report_to=[], use_cpu=True, dataloader_num_workers=0, disable_tqdm=True,
    )
    rewards: list[float] = []

    class Rewards(TrainerCallback):
        def on_log(self, _args, _state, _control, logs=None, **_):
            if logs and "reward" in logs:
                rewards.append(float(logs["reward"]))

    trainer = GRPOTrainer(model=model, reward_funcs=starts_lowercase, args=args, train_dataset=dataset,
                          processing_class=tokenizer, callbacks=[Rewards()])
    started = time.perf_counter()
    trainer.train()
    return {"train_seconds": time.perf_counter() - started, "rewards": rewards}


WORKERS = {"tunelab": run_tunelab, "trl": run_trl}


def worker(name: str, s: dict) -> None:
    result = run_side(WORKERS[name], s)
    result["prompts_per_s"] = s["steps"] * BATCH / result["train_seconds"]
    rewards = result["rewards"]
    result["first_reward"] = sum(rewards[:5]) / max(len(rewards[:5]), 1)
    result["last_reward"] = sum(rewards[-5:]) / max(len(rewards[-5:]), 1)
    emit(result)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    add_worker_args(parser)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, json.loads(args.settings))
        return
    s = {"data": prepare_data(), "steps": args.steps, "threads": args.threads}
    ours, theirs = measure(__file__, "tunelab", s), measure(__file__, "trl", s)
    print(f"\n== GRPO, tiny random Llama (full): {args.steps} steps x {BATCH} prompts x {GROUP} answers of "
          f"{NEW_TOKENS} tokens, fp32, {args.threads} threads")
    print(f"{'':28}{'tunelab':>10}{'TRL':>10}{'ratio':>10}")
    for label, key, fmt in (("train prompts/s", "prompts_per_s", "{:.2f}"), ("peak RSS MB", "peak_rss_mb", "{:.0f}"),
                            ("mean reward, first 5 steps", "first_reward", "{:.3f}"),
                            ("mean reward, last 5 steps", "last_reward", "{:.3f}")):
        ratio = (f"{ours[key] - theirs[key]:+.3f}" if "reward" in key else f"{ours[key] / theirs[key]:.2f}x")
        print(f"{label:28}{fmt.format(ours[key]):>10}{fmt.format(theirs[key]):>10}{ratio:>10}")
    print("raw: " + json.dumps({"tunelab": ours, "trl": theirs}))


if __name__ == "__main__":
    main()
