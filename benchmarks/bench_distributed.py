"""One process vs two: DDP, FSDP2 and DeepSpeed ZeRO-2 on the same job, CPU processes (gloo).

The job: full fine-tuning of SmolLM2-135M (fp32) on 96 synthetic text rows of ~120 tokens, batch 8
(global), max_length 128, N optimizer steps, no base evaluation, no generation, no retention set.
Each side is `tunelab train` in fresh processes: one process with all the threads, or two processes
under `accelerate launch` with half the threads each, so every side has the same cores.

Printed per side: samples/s over the training steps (run.json's step time), peak RSS of each process
(run.json `throughput.peak_rss_mb`, the kernel's high-water mark), and both as ratios to one process.
Sharding pays off in memory per process (parameters, gradients and Adam state split in two); on two
CPU cores the collectives cost throughput. Timings are printed, never asserted.

    python benchmarks/bench_distributed.py               # 6 steps, 2 threads in all
    python benchmarks/bench_distributed.py --steps 10 --threads 4
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from tunelab.recipes.launch import accelerate_command
from tunelab.server.runner import free_port

SIDES = {
    "1 process": [],
    "2 x DDP": ["distributed.strategy=ddp"],
    "2 x FSDP2": ["distributed.strategy=fsdp"],
    "2 x ZeRO-2": ["distributed.strategy=deepspeed", "distributed.deepspeed.stage=2"],
}
WORDS = ("market share price growth bank policy team match season film music award court minister election "
         "phone network software chip energy climate health school city river report study").split()


def write_job(root: Path, steps: int) -> Path:
    rng = random.Random(0)
    rows = [{"text": " ".join(rng.choice(WORDS) for _ in range(110)) + "."} for _ in range(96)]
    (root / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    body = {"task": "causal-lm", "model": {"source": "smollm2-135m-instruct"}, "data": {"train": "train.jsonl"},
            "method": {"name": "full"},
            "train": {"max_steps": steps, "batch_size": 8, "learning_rate": 1e-5, "max_length": 128,
                      "precision": "fp32", "log_every": 1, "seed": 0},
            "eval": {"base": False, "generate_samples": 0, "retention": "none"},
            "output": {"dir": "runs"}}
    path = root / "job.yaml"
    path.write_text(yaml.safe_dump(body))
    return path


def run_side(root: Path, name: str, overrides: list[str], threads: int) -> dict:
    tag = name.replace(" ", "").replace("x", "-")
    args = ["--quiet", "train", "job.yaml", f"output.name={tag}", *overrides]
    if overrides:
        command, per_process = accelerate_command(2, free_port(), args), max(1, threads // 2)
    else:
        command, per_process = [sys.executable, "-m", "tunelab", *args], threads
    env = {**os.environ, "OMP_NUM_THREADS": str(per_process), "TOKENIZERS_PARALLELISM": "false"}
    started = time.perf_counter()
    done = subprocess.run(command + [f"train.num_threads={per_process}"], cwd=root, env=env, capture_output=True,
                          text=True)
    if done.returncode != 0:
        sys.exit(f"{name} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    run = next(p for p in (root / "runs").iterdir() if p.name.startswith(tag + "-"))
    record = json.loads((run / "run.json").read_text())
    step_seconds = record["train_seconds"] - record["eval_seconds"] - record["checkpoint_seconds"]
    losses = [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()
              if "split" not in line]
    return {"samples_per_s": record["steps"] * 8 / step_seconds, "peak_rss_mb": record["throughput"]["peak_rss_mb"],
            "last_loss": losses[-1], "process_seconds": time.perf_counter() - started}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2, help="CPU threads in all, split across processes")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tunelab-bench-dist-") as tmp:
        root = Path(tmp)
        write_job(root, args.steps)
        # the GGUF -> safetensors conversion happens once, here, not inside the first side's peak memory
        warm = "from tunelab.config import load_config; from tunelab.models import resolve_model; " \
               "resolve_model(load_config('job.yaml').model)"
        subprocess.run([sys.executable, "-c", warm], cwd=root, check=True, capture_output=True)
        results = {name: run_side(root, name, overrides, args.threads) for name, overrides in SIDES.items()}
    one = results["1 process"]
    print(f"\nSmolLM2-135M full fine-tuning, fp32, {args.steps} steps of 8 rows x 128 tokens, {args.threads} threads "
          "in all")
    print(f"{'side':<12} {'samples/s':>10} {'ratio':>6} {'peak RSS per process (MB)':>28} {'max ratio':>10} "
          f"{'last loss':>10} {'process s':>10}")
    for name, r in results.items():
        rss = r["peak_rss_mb"]
        print(f"{name:<12} {r['samples_per_s']:>10.2f} {r['samples_per_s'] / one['samples_per_s']:>6.2f} "
              f"{' / '.join(f'{m:.0f}' for m in rss):>28} {max(rss) / max(one['peak_rss_mb']):>10.2f} "
              f"{r['last_loss']:>10.4f} {r['process_seconds']:>10.1f}")


if __name__ == "__main__":
    main()
