"""tunelab autopilot vs a plain Optuna sweep: time and runs to reach a target, same budget, one run.

Both sides start from the same deliberately weak base config (a learning rate too low for one epoch)
and may turn the same knobs; the sweep (`tunelab sweep`, TPE, median pruning) gets the knobs as its
space and the budget as its trial count. Each side runs in its own fresh process. Printed per task:
runs and wall time until a run first reached the target, total time, best value, and the
autopilot/sweep ratio of the time to target.

    python benchmarks/bench_autopilot.py                     # BBC News topics with MiniLM-L6
    python benchmarks/bench_autopilot.py --task lm           # SmolLM2-135M LoRA on chatterbot dialogue
    python benchmarks/bench_autopilot.py --task topics lm --budget 6
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import yaml
from _harness import add_worker_args, emit, measure, run_side  # benchmarks/ is on sys.path: scripts run as files

HERE = Path(__file__).resolve().parent
DATA = HERE / ".data"

TASKS = {
    # topic classification: articles cut to 128 tokens, 600 training rows, one epoch at 2e-5 (too little)
    "topics": {
        "corpus": "bbc-news", "metric": "macro_f1", "at_least": 0.95,
        "config": {"task": "text-classification", "model": {"source": "minilm-l6"}, "method": {"name": "full"},
                   "data": {"max_rows": 600},
                   "train": {"epochs": 1, "batch_size": 16, "learning_rate": 2.0e-5, "max_length": 128, "seed": 0,
                             "warmup_ratio": 0.1},
                   "eval": {"metric": "macro_f1"}},
        "knobs": {"train.learning_rate": {"type": "float", "low": 1.0e-5, "high": 1.0e-3, "log": True},
                  "train.epochs": {"type": "int", "low": 1, "high": 4}},
    },
    # instruction tuning: LoRA on dialogue pairs, 30 steps at 1e-5 (too little); target: validation loss
    # 10% below the starting model's (measured by a probe run first, or --lm-target)
    "lm": {
        "corpus": "chatterbot-en", "metric": "loss", "at_most": None,
        "config": {"task": "causal-lm", "model": {"source": "smollm2-135m-instruct"},
                   "method": {"name": "lora", "r": 8}, "data": {"max_rows": 400},
                   "train": {"max_steps": 30, "batch_size": 8, "learning_rate": 1.0e-5, "max_length": 128,
                             "seed": 0},
                   "eval": {"metric": "loss", "generate_samples": 0, "retention": "none"}},
        "knobs": {"train.learning_rate": {"type": "float", "low": 1.0e-5, "high": 3.0e-3, "log": True},
                  "method.r": [4, 8, 16],
                  "train.max_steps": {"type": "int", "low": 30, "high": 120}},
    },
}


def prepare(task: str) -> Path:
    from tunelab.data.corpora import materialize

    folder = DATA / TASKS[task]["corpus"]
    if not (folder / "train.jsonl").exists():
        materialize(TASKS[task]["corpus"], folder)
    return folder


def write_inputs(task: str, data: Path, root: Path, budget: int) -> tuple[Path, Path, Path]:
    spec = TASKS[task]
    config = {**spec["config"], "data": {**spec["config"]["data"], "train": str(data / "train.jsonl"),
                                         "validation": str(data / "validation.jsonl")},
              "output": {"dir": str(root / "runs")}}
    base = root / f"{task}.yaml"
    base.write_text(yaml.safe_dump(config))
    space = root / "space.yaml"
    space.write_text(yaml.safe_dump(spec["knobs"]))
    bound = {"at_least": spec["at_least"]} if "at_least" in spec else {"at_most": spec["at_most"]}
    goal = root / "goal.yaml"
    goal.write_text(yaml.safe_dump({"base": base.name, "target": {"metric": spec["metric"], **bound},
                                    "budget": {"runs": budget}, "knobs": spec["knobs"],
                                    "output": str(root / "autopilots")}))
    return base, space, goal


def reached(task: str, value: float | None) -> bool:
    spec = TASKS[task]
    if value is None:
        return False
    return value >= spec["at_least"] if "at_least" in spec else value <= spec["at_most"]


# ---- the two workers (run in child processes) --------------------------------------------------
def run_autopilot(s: dict) -> dict:
    from tunelab.logs import quiet_third_party
    from tunelab.recipes import autopilot as recipe

    quiet_third_party()
    root = Path(tempfile.mkdtemp(prefix="bench-autopilot-"))
    _, _, goal = write_inputs(s["task"], Path(s["data"]), root, s["budget"])
    started = time.perf_counter()
    first: dict = {}

    def on_step(step) -> None:  # noqa: ANN001
        if step.reached and not first:
            first.update(runs=step.number, seconds=time.perf_counter() - started)

    loaded, state = recipe.plan(goal)
    recipe.decide(state, True)
    summary = recipe.run(loaded, state, on_step)
    values = [st["value"] for st in summary["steps"] if st["value"] is not None]
    return {"runs": summary["runs"], "total_seconds": time.perf_counter() - started,
            "to_target_runs": first.get("runs"), "to_target_seconds": first.get("seconds"),
            "best": (summary["best"] or {}).get("value"), "values": values,
            "sources": [st["source"] for st in summary["steps"]]}


def run_sweep(s: dict) -> dict:
    from tunelab.logs import quiet_third_party
    from tunelab.recipes.sweep import sweep

    quiet_third_party()
    root = Path(tempfile.mkdtemp(prefix="bench-sweep-"))
    base, space, _ = write_inputs(s["task"], Path(s["data"]), root, s["budget"])
    started = time.perf_counter()
    first: dict = {}
    values: list = []

    def on_trial(record) -> None:  # noqa: ANN001
        values.append(record.value)
        if reached(s["task"], record.value) and not first:
            first.update(runs=len(values), seconds=time.perf_counter() - started)

    outcome = sweep(base, space=space, trials=s["budget"], out=root / "sweep", seed=0, on_trial=on_trial)
    finished = [v for v in values if v is not None]
    best = (max if "at_least" in TASKS[s["task"]] else min)(finished) if finished else None
    return {"runs": len(outcome.records), "total_seconds": time.perf_counter() - started,
            "to_target_runs": first.get("runs"), "to_target_seconds": first.get("seconds"), "best": best,
            "values": values}


def run_probe(s: dict) -> dict:
    """The starting model's validation loss (the LM target is set relative to it)."""
    from tunelab.config import load_config
    from tunelab.logs import quiet_third_party
    from tunelab.recipes.train import train

    quiet_third_party()
    root = Path(tempfile.mkdtemp(prefix="bench-probe-"))
    base, _, _ = write_inputs(s["task"], Path(s["data"]), root, 1)
    outcome = train(load_config(base, ["train.max_steps=1"]))
    return {"base_loss": outcome.results["base"]["validation"]["loss"]}


WORKERS = {"autopilot": run_autopilot, "sweep": run_sweep}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", nargs="+", choices=list(TASKS), default=["topics"])
    parser.add_argument("--budget", type=int, default=6, help="runs per side")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--lm-target", type=float, help="validation loss the lm task must reach; default: 0.9x "
                        "the starting model's, measured by a probe run")
    add_worker_args(parser)
    args = parser.parse_args()
    if args.worker:
        settings = json.loads(args.settings)
        if settings.get("at_most") is not None:
            TASKS[settings["task"]]["at_most"] = settings["at_most"]
        emit(run_side({**WORKERS, "probe": run_probe}[args.worker], settings))
        return
    for task in args.task:
        settings = {"task": task, "data": str(prepare(task)), "budget": args.budget, "threads": args.threads}
        if task == "lm":
            target = args.lm_target or 0.9 * measure(__file__, "probe", settings)["base_loss"]
            TASKS[task]["at_most"] = settings["at_most"] = round(target, 4)
        results = {name: measure(__file__, name, settings) for name in WORKERS}
        spec = TASKS[task]
        bound = f">= {spec['at_least']}" if "at_least" in spec else f"<= {spec['at_most']}"
        print(f"\n{task}: target validation {spec['metric']} {bound}, budget {args.budget} runs each")
        print(f"{'side':10} {'runs to target':>15} {'s to target':>12} {'total s':>9} {'best':>8}  values")
        for name, r in results.items():
            to = r["to_target_seconds"]
            best = "-" if r["best"] is None else f"{r['best']:.4f}"
            print(f"{name:10} {str(r['to_target_runs'] or '-'):>15} {('-' if to is None else f'{to:.0f}'):>12} "
                  f"{r['total_seconds']:>9.0f} {best:>8}  "
                  f"{[None if v is None else round(v, 4) for v in r['values']]}")
        a, b = results["autopilot"]["to_target_seconds"], results["sweep"]["to_target_seconds"]
        if a is not None and b is not None:
            print(f"time to target, autopilot / sweep: {a / b:.2f}x")
        elif a is not None:
            print("the sweep did not reach the target within the budget; the autopilot did")
        else:
            print("the autopilot did not reach the target within the budget")
        print(f"autopilot steps: {results['autopilot']['sources']}")


if __name__ == "__main__":
    main()
