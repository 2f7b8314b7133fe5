"""tunelab vs TRL SFTTrainer: LoRA instruction tuning of SmolLM2-135M-Instruct on chatterbot-en, side by side.

Same model, LoRA (r 16, alpha 32, dropout 0.05, PEFT's default q_proj/v_proj), conversations, trained
tokens, hyperparameters and seed. Each side runs in its own fresh process (so peak RSS is that side's
alone) with the same torch thread count, for one epoch over the same training conversations. Prints
throughput (over the training steps only), peak RSS and the validation loss of both tuned models on the
same held-out conversations, scored by one evaluator, and the tunelab/TRL ratios. Timings are printed,
never asserted.

    python benchmarks/bench_causal_lm.py                    # unpacked + packed, 10 steps each, fp32
    python benchmarks/bench_causal_lm.py --steps 20 --threads 1
    python benchmarks/bench_causal_lm.py --variant packed --bf16

    python benchmarks/bench_causal_lm.py --variant headlines   # the small LoRA job of issue #17, vs HF Trainer

Requires TRL: `pip install -e '.[bench]'`.

`headlines`: the job a new user runs first. LoRA r 16 on every linear layer (dropout 0) of SmolLM2-135M-
Instruct, the first 160 bbc-headlines conversations (`tunelab data example bbc-headlines`), batch 8,
max_length 256, one epoch, held out: 16 validation and 16 test conversations of the corpus. The peer is a
plain HF Trainer + PEFT script (assistant-only labels from the same renderer, dynamic padding, no
gradient checkpointing, adapter saved), run in fp32 (its default) and with `bf16=True`. tunelab is the
whole `tunelab train` command with its defaults (precision auto, base eval, general-text retention,
generation on the test prompts), cold (empty base-score cache) and again warm. Printed: steps-only
trained tokens/s (tunelab's run.json `timings.train_steps` vs the time inside `trainer.train()`),
whole-command wall time, and the held-out loss of each adapter by one fp32 evaluator.

What each side trains. Every chatterbot conversation is one user turn and one assistant answer.
- tunelab: `messages` rows, the model's own ChatML template, `lm.train_on: assistant` — loss on the
  answer, its `<|im_end|>` and the newline the template puts after it.
- TRL: SmolLM2's template has no `{% generation %}` markers and TRL 1.16 has no training variant of it
  (`get_training_chat_template` raises), so `assistant_only_loss` is unavailable; the same rows are
  given as conversational prompt/completion (`prompt`: the messages before the answer, `completion`:
  the answer) and TRL masks with `completion_only_loss` — loss on the tokens after the generation
  prompt: the same answer, `<|im_end|>` and newline.
Both workers fingerprint the (input ids, labels) of every sample they train; the report says whether
the two multisets are identical.

Variants. `unpacked`: the first steps x 8 training conversations, batches of 8 padded to their longest
(tunelab groups rows of similar length into batches by default; TRL samples at random). `packed`: the
first conversations whose best-fit-decreasing packing into 256-token rows fills at most steps x 8 rows;
tunelab packs into rows fed as (8, 256) with per-sample position ids; TRL (`packing=True`, strategy bfd)
packs into rows too and, padding-free, concatenates a batch's 8 rows into one (1, ~2048) sequence whose
position ids mark the samples.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path

from _harness import add_worker_args, emit, measure  # benchmarks/ is on sys.path: scripts run as files

HERE = Path(__file__).resolve().parent
DATA = HERE / ".data"
CORPUS = DATA / "chatterbot"
MODEL = "smollm2-135m-instruct"
BATCH = 8
MAX_LENGTH = 256
IGNORE = -100


# ---- data ---------------------------------------------------------------------------------------
def prepare_corpus() -> None:
    """chatterbot-en as train/validation/test.jsonl (what `tunelab data example chatterbot-en` writes)."""
    from tunelab.data.corpora import chatterbot_en

    if not (CORPUS / "train.jsonl").exists():
        chatterbot_en(CORPUS)


def read_rows(path: Path) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def model_path() -> str:
    from tunelab.config.schema import ModelConfig
    from tunelab.models import resolve_model

    return str(resolve_model(ModelConfig(source=MODEL)).path)


def encode(tokenizer, messages: list[dict]) -> tuple[list[int], list[int]]:
    """(input ids, labels) of one conversation as tunelab renders it (answers and end-of-turn trained),
    cut to MAX_LENGTH."""
    from tunelab.tasks.lm.render import Encoded, render_chat, to_labels

    enc = render_chat(messages, tokenizer, "assistant")
    enc = Encoded(enc.input_ids[:MAX_LENGTH], enc.trained[:MAX_LENGTH])
    return enc.input_ids, to_labels(enc)


def train_subset(steps: int, variant: str) -> tuple[Path, int]:
    """Write the training conversations of a variant; return the file and the number of conversations.

    unpacked: the first steps x BATCH conversations. packed: the most leading conversations whose
    best-fit-decreasing packing into MAX_LENGTH rows needs at most steps x BATCH rows."""
    from transformers import AutoTokenizer

    from tunelab.tasks.lm.packing import best_fit_decreasing

    rows = read_rows(CORPUS / "train.jsonl")
    for row in rows:
        roles = [m["role"] for m in row["messages"]]
        if roles.count("assistant") != 1 or roles[-1] != "assistant":
            sys.exit("each conversation must end with its only assistant turn (prompt/completion equivalence)")
    target = steps * BATCH
    if variant == "unpacked":
        n = min(target, len(rows))
    else:
        tokenizer = AutoTokenizer.from_pretrained(model_path())
        lengths = [len(encode(tokenizer, r["messages"])[0]) for r in rows]
        lo, hi = 1, len(rows)  # largest n with bins(n) <= target (bins grow with n)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if len(best_fit_decreasing(lengths[:mid], MAX_LENGTH)) <= target:
                lo = mid
            else:
                hi = mid - 1
        n = lo
    path = DATA / f"train-{variant}-{n}.jsonl"
    with open(path, "w") as f:
        for row in rows[:n]:
            f.write(json.dumps(row) + "\n")
    return path, n


def fingerprint(samples: list[tuple[list[int], list[int]]]) -> dict:
    """Order-free digest of trained samples, with their counts."""
    digests = sorted(hashlib.sha1(json.dumps([list(map(int, i)), list(map(int, l))]).encode()).hexdigest()
                     for i, l in samples)
    return {"samples": len(samples), "tokens": sum(len(i) for i, _ in samples),
            "trained_tokens": sum(sum(1 for t in l if t != IGNORE) for _, l in samples),
            "digest": hashlib.sha1("".join(digests).encode()).hexdigest()[:12]}


def heldout_loss(model, tokenizer, path: str, batch_size: int = 16) -> float:
    """Mean cross-entropy per trained token (answers + end of turn) over the held-out conversations:
    the same code, data and fp32 forward for both sides."""
    import torch
    import torch.nn.functional as F

    encoded = sorted((encode(tokenizer, r["messages"]) for r in read_rows(Path(path))), key=lambda e: -len(e[0]))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    total, count = 0.0, 0
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(encoded), batch_size):
            chunk = encoded[start : start + batch_size]
            width = max(len(i) for i, _ in chunk)
            ids = torch.tensor([i + [pad] * (width - len(i)) for i, _ in chunk])
            labels = torch.tensor([l + [IGNORE] * (width - len(l)) for _, l in chunk])
            mask = torch.tensor([[1] * len(i) + [0] * (width - len(i)) for i, _ in chunk])
            logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits.float()
            total += float(F.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), reduction="sum"))
            count += int((labels[:, 1:] != IGNORE).sum())
    return total / count


class RssSampler(threading.Thread):
    """Peak resident set size of this process, sampled with psutil every 20 ms."""

    def __init__(self) -> None:
        import psutil

        super().__init__(daemon=True)
        self.proc, self.peak, self.halt = psutil.Process(), 0, threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            self.halt.wait(0.02)

    def stop(self) -> float:
        self.halt.set()
        self.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)
        return self.peak / 2**20


class StepClock:
    """A tunelab Reporter that notes wall and CPU time from the start of the loop to the end of each step
    (the last step's values: training steps only, before the final evaluation)."""

    def start(self, total_steps: int, done_steps: int) -> None:
        self.wall0, self.cpu0, self.load0 = time.perf_counter(), time.process_time(), os.getloadavg()[0]

    def step(self, step: int, record: dict) -> None:
        self.wall, self.cpu = time.perf_counter() - self.wall0, time.process_time() - self.cpu0
        self.load1 = os.getloadavg()[0]

    def evaluation(self, step: int, metrics: dict, note: str) -> None:
        pass

    def end(self) -> None:
        pass


def padded_positions(lengths: list[int], batches: list[list[int]]) -> int:
    return sum(len(b) * max(lengths[i] for i in b) for b in batches)


# ---- the two workers (run in child processes) --------------------------------------------------
def run_tunelab(s: dict, sampler: RssSampler) -> dict:
    import numpy as np
    import yaml
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from peft import PeftModel

    from tunelab.config import load_config
    from tunelab.engine.batching import epoch_batches
    from tunelab.logs import quiet_third_party
    from tunelab.recipes.train import train
    from tunelab.tasks.lm.packing import pack_rows

    quiet_third_party()
    raw = {
        "task": "causal-lm", "model": {"source": MODEL},
        "data": {"train": s["train"], "validation": s["validation"], "test": s["test"], "records": "messages"},
        "lm": {"template": "auto", "train_on": "assistant", "packing": s["packed"]},
        "method": {"name": "lora", "r": 16, "alpha": 32, "dropout": 0.05, "merge": False},
        "train": {"epochs": 1, "batch_size": BATCH, "learning_rate": 3e-4, "weight_decay": 0.01,
                  "warmup_steps": 0, "scheduler": "linear", "max_grad_norm": 1.0, "max_length": MAX_LENGTH,
                  "precision": s["precision"], "seed": 0, "log_every": 1, "checkpoint_every": 100000,
                  "num_threads": s["threads"]},
        # One evaluation at the end (its time, and the best-weights write, are reported apart).
        "eval": {"base": False, "generate_samples": 0, "load_best": False},
        "output": {"dir": str(DATA / "runs"), "name": f"bench-{s['variant']}"},
    }
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.yaml"
        path.write_text(yaml.safe_dump(raw, sort_keys=False))
        config = load_config(path)
    clock = StepClock()
    outcome = train(config, reporter=clock)
    peak = sampler.stop()
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    run = outcome.run.read_json("run.json")
    steps_seconds = run["train_seconds"] - run["eval_seconds"] - run["checkpoint_seconds"]
    metrics = [json.loads(l) for l in (outcome.run.path / "metrics.jsonl").read_text().splitlines()]
    losses = [m["loss"] for m in metrics if "loss" in m and m.get("split") is None]
    stats = outcome.run.read_json("data.json")["stats"]["train"]

    # What was trained, recomputed with tunelab's renderer (and packer) to fingerprint and count padding.
    tokenizer = AutoTokenizer.from_pretrained(model_path())
    samples = [encode(tokenizer, r["messages"]) for r in read_rows(Path(s["train"]))]
    if s["packed"]:
        packed = pack_rows({"input_ids": [i for i, _ in samples], "labels": [l for _, l in samples]}, MAX_LENGTH)
        lengths = packed["length"]
    else:
        lengths = [len(i) for i, _ in samples]
    batches = [b.tolist() for b in epoch_batches(np.asarray(lengths), BATCH, 0, 0, True)]

    base = AutoModelForCausalLM.from_pretrained(model_path(), dtype="float32")
    model = PeftModel.from_pretrained(base, outcome.run.path / "adapter")
    return {
        "steps_seconds": steps_seconds, "steps": run["steps"], "samples": len(samples),
        "trained_tokens": stats["trained_tokens"], "tokens": stats["tokens"],
        "positions": padded_positions(lengths, batches), "trained": fingerprint(samples),
        "trainable_params": run["trainable_params"], "first_loss": losses[0], "last_loss": losses[-1],
        "peak_rss_mb": peak, "ru_maxrss_mb": maxrss, "cpu_seconds": clock.cpu, "clock_seconds": clock.wall,
        "loadavg": [clock.load0, clock.load1], "own_validation_loss": outcome.results["validation"]["loss"],
        "validation_loss": heldout_loss(model, tokenizer, s["validation"]),
        "run": str(outcome.run.path),
    }


def run_trl(s: dict, sampler: RssSampler) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging
    from trl import SFTConfig, SFTTrainer

    hf_logging.set_verbosity_error()
    path = model_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    rows = read_rows(Path(s["train"]))
    # Conversational prompt/completion: the turns before the answer, and the answer.
    train_ds = Dataset.from_list([{"prompt": r["messages"][:-1], "completion": r["messages"][-1:]} for r in rows])
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    args = SFTConfig(
        output_dir=str(DATA / "trl-out"), per_device_train_batch_size=BATCH, num_train_epochs=1,
        learning_rate=3e-4, lr_scheduler_type="linear", warmup_steps=0, weight_decay=0.01, max_grad_norm=1.0,
        seed=0, bf16=s["precision"] == "bf16", fp16=False, gradient_checkpointing=False,  # TRL defaults: on
        max_length=MAX_LENGTH, packing=s["packed"], packing_strategy="bfd", completion_only_loss=True,
        assistant_only_loss=False, eval_strategy="no", save_strategy="no", logging_strategy="steps",
        logging_steps=1, report_to=[], use_cpu=True, dataloader_num_workers=0, disable_tqdm=True,
    )
    peft_config = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, task_type="CAUSAL_LM")
    trainer = SFTTrainer(model=model, args=args, train_dataset=train_ds, processing_class=tokenizer,
                         peft_config=peft_config)

    # What TRL trains: its prepared rows, split back into samples where packed.
    prepared = trainer.train_dataset
    samples = []
    for row in prepared:
        ids, labels = row["input_ids"], list(row["labels"])
        offsets = [0]
        for n in row.get("seq_lengths") or [len(ids)]:
            offsets.append(offsets[-1] + n)
        for a, b in zip(offsets, offsets[1:]):
            sample_labels = labels[a:b]
            sample_labels[0] = IGNORE  # never a target (collator: position 0; fused head: shifted out)
            samples.append((ids[a:b], sample_labels))

    positions = [0]
    collate = trainer.data_collator

    def counting(features):
        batch = collate(features)
        positions[0] += batch["input_ids"].numel()
        return batch

    trainer.data_collator = counting
    load0, started, cpu0 = os.getloadavg()[0], time.perf_counter(), time.process_time()
    trainer.train()
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu0
    peak = sampler.stop()
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    fp = fingerprint(samples)
    return {
        "steps_seconds": seconds, "steps": trainer.state.global_step, "samples": len(samples),
        "trained_tokens": fp["trained_tokens"], "tokens": fp["tokens"], "positions": positions[0],
        "trained": fp, "trainable_params": sum(p.numel() for p in trainer.model.parameters() if p.requires_grad),
        "first_loss": losses[0], "last_loss": losses[-1], "peak_rss_mb": peak, "ru_maxrss_mb": maxrss,
        "cpu_seconds": cpu, "loadavg": [load0, os.getloadavg()[0]],
        "validation_loss": heldout_loss(trainer.model, tokenizer, s["validation"]),
    }


# ---- headlines: the whole default `tunelab train` vs a whole HF Trainer + PEFT script ---------------
HEADLINES = DATA / "headlines"
HEADLINE_ROWS = 160


def prepare_headlines() -> dict[str, str]:
    from tunelab.data.corpora import bbc_headlines

    if not (HEADLINES / "train.jsonl").exists():
        bbc_headlines(HEADLINES)
    files = {}
    for split, n in (("train", HEADLINE_ROWS), ("validation", 16), ("test", 16)):
        path = DATA / f"headlines-{split}-{n}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in read_rows(HEADLINES / f"{split}.jsonl")[:n]))
        files[split] = str(path)
    return files


def run_hf_peft(s: dict, sampler: RssSampler) -> dict:
    """What a user writes with HF Trainer + PEFT for this job: tokenize, pad per batch, train, save."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, DataCollatorForSeq2Seq, Trainer, TrainingArguments
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    path = model_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    samples = [encode(tokenizer, r["messages"]) for r in read_rows(Path(s["train"]))]
    train_ds = Dataset.from_list([{"input_ids": i, "attention_mask": [1] * len(i), "labels": l} for i, l in samples])
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear",
                                             task_type="CAUSAL_LM"))
    args = TrainingArguments(
        output_dir=str(DATA / "hf-out"), per_device_train_batch_size=BATCH, num_train_epochs=1, learning_rate=3e-4,
        lr_scheduler_type="linear", warmup_steps=0, weight_decay=0.01, max_grad_norm=1.0, seed=0,
        bf16=s["precision"] == "bf16", save_strategy="no", eval_strategy="no", logging_steps=1, report_to=[],
        use_cpu=True, dataloader_num_workers=0, disable_tqdm=True,
    )
    trainer = Trainer(model=model, args=args, train_dataset=train_ds,
                      data_collator=DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=IGNORE))
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    adapter = DATA / f"hf-adapter-{s['precision']}"
    trainer.save_model(str(adapter))
    sampler.stop()
    fp = fingerprint(samples)
    return {"steps_seconds": seconds, "steps": trainer.state.global_step, "samples": len(samples),
            "trained_tokens": fp["trained_tokens"], "trained": fp, "adapter": str(adapter)}


def run_tunelab_cli(s: dict, sampler: RssSampler) -> dict:
    """The whole `tunelab train` command, defaults on, in its own process (what a user waits for)."""
    import subprocess

    import yaml

    raw = {
        "task": "causal-lm", "model": {"source": MODEL},
        "data": {"train": s["train"], "validation": s["validation"], "test": s["test"], "records": "messages"},
        "lm": {"template": "auto", "train_on": "assistant"},
        "method": {"name": "lora", "r": 16, "alpha": 32, "dropout": 0.0, "target_modules": "all-linear"},
        "train": {"epochs": 1, "batch_size": BATCH, "learning_rate": 3e-4, "max_length": MAX_LENGTH, "seed": 0,
                  "num_threads": s["threads"]},
        "output": {"dir": str(DATA / "runs"), "name": f"headlines-{s['pass']}"},
    }
    cfg = DATA / f"headlines-{s['pass']}.yaml"
    cfg.write_text(yaml.safe_dump(raw, sort_keys=False))
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "tunelab", "train", str(cfg)], capture_output=True, text=True)
    wall = time.perf_counter() - started
    if proc.returncode:
        sys.exit(proc.stdout[-2000:] + proc.stderr[-2000:])
    run = sorted((DATA / "runs").glob(f"headlines-{s['pass']}*"), key=lambda p: p.stat().st_mtime)[-1]
    record = json.loads((run / "run.json").read_text())
    stats = json.loads((run / "data.json").read_text())["stats"]["train"]
    evals = json.loads((run / "eval.json").read_text())
    sampler.stop()
    return {"steps_seconds": record["timings"]["train_steps"], "command_seconds": wall, "steps": record["steps"],
            "samples": stats["rows"] if "rows" in stats else HEADLINE_ROWS, "trained_tokens": stats["trained_tokens"],
            "timings": record["timings"], "precision": record.get("precision"), "mfu": record["throughput"]["mfu"],
            "base_cached": (record.get("base_scores") or {}).get("cached"), "adapter": str(run / "adapter"),
            "evaluations": sorted(k for k in evals if k in ("base", "retention", "generation", "test", "validation"))}


def adapter_loss(adapter: str, validation: str) -> float:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path())
    base = AutoModelForCausalLM.from_pretrained(model_path(), dtype=torch.float32)
    return heldout_loss(PeftModel.from_pretrained(base, adapter), tokenizer, validation)


def headlines(threads: int) -> None:
    files = prepare_headlines()
    from tunelab.paths import cache_dir

    import shutil

    shutil.rmtree(cache_dir() / "base-scores", ignore_errors=True)  # the cold pass scores its base itself
    common = {**files, "threads": threads}
    peers = {p: measure(__file__, "hf-peft", {**common, "precision": p}) for p in ("fp32", "bf16")}
    cold = measure(__file__, "tunelab-cli", {**common, "pass": "cold"})
    warm = measure(__file__, "tunelab-cli", {**common, "pass": "warm"})
    for side in (*peers.values(), cold, warm):
        side["validation_loss"] = adapter_loss(side["adapter"], files["validation"])
        side["tokens_per_s"] = side["trained_tokens"] / side["steps_seconds"]
    print(f"\n== headlines: SmolLM2-135M-Instruct, LoRA r 16 all-linear, {HEADLINE_ROWS} conversations x 1 epoch, "
          f"batch {BATCH}, max_length {MAX_LENGTH}, {threads} threads; tunelab precision {cold['precision']}")
    print(f"{'':36}{'tunelab cold':>14}{'tunelab warm':>14}{'HF fp32':>10}{'HF bf16':>10}")
    for label, key, fmt in (("trained tokens", "trained_tokens", "{:d}"), ("optimizer steps", "steps", "{:d}"),
                            ("training steps seconds", "steps_seconds", "{:.1f}"),
                            ("trained tokens/s (steps only)", "tokens_per_s", "{:.1f}"),
                            ("whole command seconds", "process_seconds", "{:.1f}"),
                            ("held-out loss (one fp32 evaluator)", "validation_loss", "{:.4f}")):
        values = [cold.get("command_seconds") if key == "process_seconds" else cold[key],
                  warm.get("command_seconds") if key == "process_seconds" else warm[key],
                  peers["fp32"][key], peers["bf16"][key]]
        print(f"{label:36}" + "".join(f"{fmt.format(v):>{w}}" for v, w in zip(values, (14, 14, 10, 10))))
    for name, peer in peers.items():
        print(f"vs HF {name}: steps-only tokens/s {cold['tokens_per_s'] / peer['tokens_per_s']:.2f}x; whole command "
              f"cold {cold['command_seconds'] / peer['process_seconds']:.2f}x, warm "
              f"{warm['command_seconds'] / peer['process_seconds']:.2f}x of the peer's wall; held-out loss "
              f"{100 * (cold['validation_loss'] / peer['validation_loss'] - 1):+.2f}%")
    same = cold["trained_tokens"] == peers["fp32"]["trained_tokens"]
    print(f"notes: same trained tokens on both sides: {'yes' if same else 'NO'}; tunelab MFU {cold['mfu']:.0%}; "
          f"its eval.json holds {', '.join(cold['evaluations'])}; warm pass reused base scores: {warm['base_cached']}")
    print("tunelab cold timings (s): " + ", ".join(f"{k} {v}" for k, v in cold["timings"].items()))
    print("\nraw: " + json.dumps({"cold": cold, "warm": warm, **{f"hf-{k}": v for k, v in peers.items()}}))


WORKERS = {"tunelab": run_tunelab, "trl": run_trl, "hf-peft": run_hf_peft, "tunelab-cli": run_tunelab_cli}


def worker(name: str, s: dict) -> None:
    sampler = RssSampler()
    sampler.start()
    import torch

    torch.set_num_threads(s["threads"])
    torch.manual_seed(0)
    result = WORKERS[name](s, sampler)
    result["samples_per_s"] = result["samples"] / result["steps_seconds"]
    result["trained_tokens_per_s"] = result["trained_tokens"] / result["steps_seconds"]
    emit(result)


# ---- the parent: _harness.measure runs each side in its own process ----------------------------------
def report(s: dict, ours: dict, theirs: dict) -> None:
    print(f"\n== {s['variant']}: SmolLM2-135M-Instruct, LoRA r 16 (q_proj, v_proj), {ours['samples']} conversations "
          f"x 1 epoch, batch {BATCH}, max_length {MAX_LENGTH}, {s['precision']}, {s['threads']} threads")
    print(f"{'':32}{'tunelab':>12}{'TRL':>12}{'ratio':>10}")
    rows = [("optimizer steps", "steps", "{:d}", None),
            ("samples trained", "samples", "{:d}", None),
            ("trained tokens", "trained_tokens", "{:d}", None),
            ("positions fed (incl. padding)", "positions", "{:d}", "ratio"),
            ("training steps seconds", "steps_seconds", "{:.1f}", "ratio"),
            ("CPU seconds in those steps", "cpu_seconds", "{:.1f}", "ratio"),
            ("throughput samples/s", "samples_per_s", "{:.2f}", "ratio"),
            ("throughput trained tokens/s", "trained_tokens_per_s", "{:.1f}", "ratio"),
            ("peak RSS MB (psutil, 20 ms)", "peak_rss_mb", "{:.0f}", "ratio"),
            ("peak RSS MB (ru_maxrss)", "ru_maxrss_mb", "{:.0f}", "ratio"),
            ("train loss, first step", "first_loss", "{:.4f}", None),
            ("train loss, last step", "last_loss", "{:.4f}", None),
            ("validation loss (same evaluator)", "validation_loss", "{:.4f}", "diff")]
    for label, key, fmt, kind in rows:
        a, b = ours[key], theirs[key]
        shown = "" if kind is None else f"{a / b:.2f}x" if kind == "ratio" else f"{a - b:+.4f}"
        print(f"{label:32}{fmt.format(a):>12}{fmt.format(b):>12}{shown:>10}")
    same = ours["trained"] == theirs["trained"]
    print(f"notes: trained samples (input ids + labels) identical on both sides: {'yes' if same else 'NO'} "
          f"(tunelab {ours['trained']}, TRL {theirs['trained']}); trainable parameters "
          f"{ours['trainable_params']:,} / {theirs['trainable_params']:,}; tunelab's own validation loss "
          f"{ours['own_validation_loss']:.4f}; 1-min load average before/after the steps: tunelab "
          f"{ours['loadavg'][0]:.1f}/{ours['loadavg'][1]:.1f}, TRL {theirs['loadavg'][0]:.1f}/{theirs['loadavg'][1]:.1f}.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", choices=["unpacked", "packed", "both", "headlines"], default="both")
    parser.add_argument("--steps", type=int, default=10, help="optimizer steps per variant (default 10)")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast on both sides (default fp32)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    add_worker_args(parser)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, json.loads(args.settings))
        return
    if args.variant == "headlines":
        headlines(args.threads)
        return
    prepare_corpus()
    # tunelab always scores its test split after training; a few rows keep that short (unused here).
    test = DATA / "test-8.jsonl"
    test.write_text("".join(json.dumps(r) + "\n" for r in read_rows(CORPUS / "test.jsonl")[:8]))
    results = {}
    for variant in (["unpacked", "packed"] if args.variant == "both" else [args.variant]):
        train, _ = train_subset(args.steps, variant)
        s = {"variant": variant, "packed": variant == "packed", "train": str(train),
             "validation": str(CORPUS / "validation.jsonl"), "test": str(test),
             "precision": "bf16" if args.bf16 else "fp32", "threads": args.threads}
        theirs = measure(__file__, "trl", s)
        ours = measure(__file__, "tunelab", s)
        report(s, ours, theirs)
        results[variant] = {"tunelab": ours, "trl": theirs}
    print("\nraw: " + json.dumps(results))


if __name__ == "__main__":
    main()
