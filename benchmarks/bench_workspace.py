"""tunelab's governed workspace vs DVC and MLflow, side by side in one run (timings are printed, never asserted).

1. Dataset versioning: register a JSONL file as an immutable, content-addressed version.
   tunelab `add_version` (sha256, copy into .tunelab/artifacts/datasets/<sha256>/, one SQLite transaction
   with its audit entry) vs DVC `add` (md5, copy into .dvc/cache, a .dvc file). Steps: init, add v1,
   re-add the unchanged file (the no-op path), add v2 (1% of rows changed, the file edited in place).
   Measured two ways: in-process (`add_version` vs `dvc.repo.Repo.add`) and as CLI processes
   (`tunelab data add NAME FILE` vs `dvc add FILE`, interpreter start-up and imports included).
2. Run tracking + registry: record one finished run folder's lineage and register it as a model version.
   tunelab `record_start` + `record_end` (sha256 of every artifact, config, environment, audit chain) +
   `registry.register` (a version and its model card) vs MLflow on a SQLite backend store with a local
   artifact root (params, 500 metric steps, a copy of the run folder, a registered model version).

Each side runs in its own fresh process (benchmarks/_harness.py), so its peak RSS is its own; within a
process every step's peak is measured apart (Linux /proc/self/clear_refs resets the high-water mark).

    python benchmarks/bench_workspace.py --quick            # 5 MB data, 10 MB weights: a fast check
    python benchmarks/bench_workspace.py                    # 50 MB and 500 MB data, 90 MB weights
    python benchmarks/bench_workspace.py --part data --mode api --sizes 50

Generated inputs live in benchmarks/.data/workspace/ (files over 100 MB are deleted at the end unless
--keep-data); every workspace, DVC repo and MLflow store is made in a scratch folder there and removed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _harness import add_worker_args, emit, measure  # benchmarks/ is on sys.path: scripts run as files

HERE = Path(__file__).resolve().parent
DATA = HERE / ".data" / "workspace"
INPUTS = DATA / "inputs"
SCRATCH = DATA / "scratch"
BIN = Path(sys.executable).parent  # the tunelab and dvc console scripts of this environment
MB = 1 << 20
DATASET_NAME = "bench"
MODEL_NAME = "bench-model"
RUN_ID = "bench-run-20260101-000000-beef"
LABELS = ["business", "entertainment", "politics", "sport", "tech"]
WORDS = ["model", "data", "train", "token", "layer", "loss", "batch", "epoch", "gradient", "value", "market",
         "vote", "match", "film", "chip", "cloud", "policy", "team", "score", "album", "phone", "law", "league",
         "actor", "price", "bank", "code", "robot", "senate", "goal", "stage", "tax"]
# No telemetry or update checks on either side (nothing outside this machine is reachable anyway).
QUIET_ENV = {"DVC_NO_ANALYTICS": "1", "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1",
             "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


# ---- peak RSS per step ------------------------------------------------------------------------
def reset_peak() -> None:
    """Reset this process's RSS high-water mark (Linux >= 4.0); without it, peaks are the process's so far."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        pass


def _status_kb(field: str) -> int | None:
    try:
        match = re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.MULTILINE)
    except OSError:
        return None
    return int(match.group(1)) if match else None


def peak_mb() -> float:
    kb = _status_kb("VmHWM")
    return (kb if kb is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) / 1024


def rss_mb() -> float:
    kb = _status_kb("VmRSS")
    return kb / 1024 if kb is not None else peak_mb()


def step(results: dict[str, Any], name: str, fn: Callable[[], Any]) -> Any:
    """Run fn, storing {seconds, peak_rss_mb} under results[name]; returns fn's value."""
    reset_peak()
    started = time.perf_counter()
    value = fn()
    results[name] = {"seconds": time.perf_counter() - started, "peak_rss_mb": peak_mb()}
    return value


def timed_import(results: dict[str, Any], fn: Callable[[], Any]) -> Any:
    started = time.perf_counter()
    value = fn()
    results["import"] = {"seconds": time.perf_counter() - started, "peak_rss_mb": rss_mb()}
    return value


def run_cli(results: dict[str, Any], name: str, cmd: list[str], cwd: Path, env: dict[str, str], log: Path) -> None:
    """One CLI process: its wall seconds and its own peak RSS (os.wait4 gives that child's rusage)."""
    with open(log, "ab") as out:
        out.write(f"\n$ {' '.join(cmd)}\n".encode())
        out.flush()
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=out, stdin=subprocess.DEVNULL)
        _pid, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{log.read_text()[-3000:]}")
    results[name] = {"seconds": seconds, "peak_rss_mb": usage.ru_maxrss / 1024}


# ---- inputs (made once by the parent) ----------------------------------------------------------
def make_jsonl(mb: int) -> dict[str, Any]:
    """data-<mb>mb.jsonl and a v2 with every 100th row changed; both reused when already there."""
    INPUTS.mkdir(parents=True, exist_ok=True)
    v1, v2, meta = INPUTS / f"data-{mb}mb.jsonl", INPUTS / f"data-{mb}mb-v2.jsonl", INPUTS / f"data-{mb}mb.json"
    if not (v1.exists() and v2.exists() and meta.exists()):
        print(f"writing {mb} MB of synthetic JSONL (and a v2 with 1% of rows changed) ...", flush=True)
        rng = random.Random(mb)
        rows = changed = size = 0
        with open(v1, "w") as a, open(v2, "w") as b:
            buffer_a, buffer_b = [], []
            while size < mb * MB:
                text = " ".join(rng.choices(WORDS, k=rng.randint(8, 40)))
                label = LABELS[rng.randrange(len(LABELS))]
                line = f'{{"id": {rows}, "text": "{text}", "label": "{label}"}}\n'
                buffer_a.append(line)
                if rows % 100 == 50:
                    other = LABELS[(LABELS.index(label) + 1) % len(LABELS)]
                    line = f'{{"id": {rows}, "text": "{text} (edited)", "label": "{other}"}}\n'
                    changed += 1
                buffer_b.append(line)
                size += len(buffer_a[-1])
                rows += 1
                if len(buffer_a) >= 50_000:
                    a.writelines(buffer_a)
                    b.writelines(buffer_b)
                    buffer_a, buffer_b = [], []
            a.writelines(buffer_a)
            b.writelines(buffer_b)
        meta.write_text(json.dumps({"rows": rows, "changed": changed}))
    info = json.loads(meta.read_text())
    return {"v1": str(v1), "v2": str(v2), "mb": mb, "bytes": v1.stat().st_size, "bytes_v2": v2.stat().st_size,
            **info}


def minimal_config(data: Path, out: Path) -> dict[str, Any]:
    """The minimal text-classification config of tests/conftest.py `make_config`, on MiniLM-L6."""
    return {
        "task": "text-classification", "model": {"source": "minilm-l6"},
        "data": {split: str(data / f"{split}.jsonl") for split in ("train", "validation", "test")},
        "method": {"name": "full"},
        "train": {"epochs": 2, "batch_size": 8, "learning_rate": 1e-3, "max_length": 64, "seed": 0, "log_every": 1},
        "eval": {"metric": "macro_f1"},
        "output": {"dir": str(out)},
    }


def split_metrics(rng: random.Random, support: int) -> dict[str, Any]:
    per_class = {label: {"precision": rng.random(), "recall": rng.random(), "f1": rng.random(), "support": support}
                 for label in LABELS}
    return {"accuracy": rng.random(), "macro_f1": rng.random(), "weighted_f1": rng.random(),
            "support": support * len(LABELS), "per_class": per_class}


def make_run_folder(weights_mb: int) -> dict[str, Any]:
    """A finished run folder as training leaves it: config, eval, 500 metric lines, model weights."""
    import numpy as np
    from safetensors.numpy import save_file

    from tunelab.config import dump_config, validate

    root = INPUTS / f"run-{weights_mb}mb"
    run = root / "runs" / RUN_ID
    done = root / "done.json"
    if done.exists():
        return json.loads(done.read_text())
    print(f"writing a run folder with {weights_mb} MB of float32 weights ...", flush=True)
    shutil.rmtree(root, ignore_errors=True)
    data = root / "data"
    data.mkdir(parents=True)
    rng = random.Random(0)
    for split, n in (("train", 2000), ("validation", 250), ("test", 250)):
        with open(data / f"{split}.jsonl", "w") as handle:
            handle.writelines(json.dumps({"text": " ".join(rng.choices(WORDS, k=12)), "label": LABELS[i % 5]}) + "\n"
                              for i in range(n))
    config = validate(minimal_config(data, root / "runs"))
    (run / "model").mkdir(parents=True)
    (run / "config.yaml").write_text(dump_config(config))
    (run / "run.json").write_text(json.dumps({"id": RUN_ID, "status": "succeeded", "task": config.task,
                                              "steps": 500, "train_seconds": 300.0}, indent=2))
    (run / "labels.json").write_text(json.dumps(LABELS))
    (run / "data.json").write_text(json.dumps({"rows": {"train": 2000, "validation": 250, "test": 250}}))
    evaluation = {"weights": "best", "best": {"step": 500, "metric": "macro_f1", "value": 0.97},
                  "validation": split_metrics(rng, 50), "test": split_metrics(rng, 50)}
    (run / "eval.json").write_text(json.dumps(evaluation, indent=2))
    metric_lines = [{"step": i, "epoch": round(i / 250, 4), "loss": 2.0 / i, "lr": 1e-3 * (1 - i / 500),
                     "grad_norm": rng.random() * 3, "tokens_per_s": 1300 + rng.random() * 200,
                     "samples_per_s": 5 + rng.random()} for i in range(1, 501)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in metric_lines))
    # Several tensors of float32 noise, like a checkpoint (MiniLM-L6 is 22.7M params = ~90 MB).
    generator = np.random.default_rng(0)
    total = weights_mb * MB // 4
    tensors, left, index = {}, total, 0
    while left > 0:
        n = min(left, 4 * MB)
        tensors[f"layer.{index}.weight"] = generator.standard_normal(n, dtype=np.float32)
        left -= n
        index += 1
    save_file(tensors, str(run / "model" / "model.safetensors"))
    (run / "model" / "config.json").write_text(json.dumps({"architectures": ["BertForSequenceClassification"],
                                                          "num_labels": 5}))
    files = [p for p in run.rglob("*") if p.is_file()]
    info = {"run": str(run), "data": str(data), "files": len(files), "bytes": sum(p.stat().st_size for p in files)}
    done.write_text(json.dumps(info))
    return info


# ---- dataset versioning workers (child processes) ----------------------------------------------
def place(source: str, target: Path) -> None:
    """Put `source`'s bytes at `target` (the file the user edits and registers); not timed."""
    target.unlink(missing_ok=True)
    shutil.copyfile(source, target)


def data_tunelab_api(s: dict) -> dict:
    root = Path(s["scratch"])
    r: dict[str, Any] = {}

    def load():
        from tunelab.workspace import Workspace
        from tunelab.workspace.datasets import add_version

        return Workspace, add_version

    Workspace, add_version = timed_import(r, load)
    ws = step(r, "init", lambda: Workspace.init(root))
    file = root / "data.jsonl"
    place(s["v1"], file)
    first = step(r, "add_v1", lambda: add_version(ws, DATASET_NAME, file))
    again = step(r, "readd", lambda: add_version(ws, DATASET_NAME, file))
    place(s["v2"], file)
    second = step(r, "add_v2", lambda: add_version(ws, DATASET_NAME, file))
    assert first.created and not again.created and second.created, "unexpected version outcome"
    r["versions"] = [first.version.ref, second.version.ref]
    return r


def data_dvc_api(s: dict) -> dict:
    root = Path(s["scratch"])
    r: dict[str, Any] = {}

    def load():
        from dvc.repo import Repo

        return Repo

    Repo = timed_import(r, load)
    os.chdir(root)
    step(r, "init", lambda: Repo.init(str(root), no_scm=True).close())
    repo = Repo(str(root))
    file = root / "data.jsonl"
    place(s["v1"], file)
    step(r, "add_v1", lambda: repo.add("data.jsonl"))
    step(r, "readd", lambda: repo.add("data.jsonl"))
    place(s["v2"], file)
    step(r, "add_v2", lambda: repo.add("data.jsonl"))
    repo.close()
    r["cache_objects"] = sum(1 for p in (root / ".dvc" / "cache").rglob("*") if p.is_file())
    return r


def cli_env(root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("TUNELAB_WORKSPACE", "TUNELAB_DATABASE_URL")}
    # A fresh tunelab cache, so nothing earlier runs left there is reused.
    return {**env, **QUIET_ENV, "TUNELAB_CACHE": str(root / "tunelab-cache"),
            "DVC_SITE_CACHE_DIR": str(root / "dvc-site-cache")}


def data_cli(s: dict, init: list[str], add: list[str]) -> dict:
    """One side's four commands as processes: init, add v1, re-add the unchanged file, add v2."""
    root = Path(s["scratch"])
    r: dict[str, Any] = {}
    env, log = cli_env(root), root / "cli.log"
    run_cli(r, "init", init, root, env, log)
    file = root / "data.jsonl"
    place(s["v1"], file)
    run_cli(r, "add_v1", add, root, env, log)
    run_cli(r, "readd", add, root, env, log)
    place(s["v2"], file)
    run_cli(r, "add_v2", add, root, env, log)
    r["log_tail"] = log.read_text()[-600:]
    r["process_peak_rss_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # its largest command
    return r


def data_tunelab_cli(s: dict) -> dict:
    exe = str(BIN / "tunelab")
    return data_cli(s, [exe, "init", s["scratch"]], [exe, "data", "add", DATASET_NAME, "data.jsonl"])


def data_dvc_cli(s: dict) -> dict:
    exe = str(BIN / "dvc")
    return data_cli(s, [exe, "init", "--no-scm", "-q"], [exe, "add", "data.jsonl"])


# ---- run tracking + registry workers -------------------------------------------------------------
def run_tunelab(s: dict) -> dict:
    root = Path(s["scratch"])
    r: dict[str, Any] = {}

    def load():
        from tunelab.data.fingerprint import file_sha256
        from tunelab.runs import RunFolder, collect_environment
        from tunelab.workspace import Workspace
        from tunelab.workspace.lineage import InputRecord, record_end, record_start
        from tunelab.workspace.registry import register

        return (file_sha256, RunFolder, collect_environment, Workspace, InputRecord, record_end, record_start,
                register)

    file_sha256, RunFolder, collect_environment, Workspace, InputRecord, record_end, record_start, register = \
        timed_import(r, load)
    ws = step(r, "init", lambda: Workspace.init(root / "ws"))
    run = RunFolder.open(s["run"])
    config = run.config()
    # Training hashed its inputs while loading them; the recorder is handed those hashes.
    inputs = [InputRecord(split, str(Path(s["data"]) / f"{split}.jsonl"),
                          file_sha256(Path(s["data"]) / f"{split}.jsonl")) for split in ("train", "validation", "test")]

    def record():
        started = time.perf_counter()
        environment = collect_environment()
        r["collect_environment_seconds"] = time.perf_counter() - started
        record_start(ws, run, config, inputs, environment)
        record_end(ws, run, "succeeded")

    step(r, "record", record)
    version = step(r, "register", lambda: register(ws, run.id, MODEL_NAME))
    from sqlalchemy import func, select

    from tunelab.workspace.orm import Artifact, AuditEntry

    with ws.read() as session:
        r["artifacts_hashed"] = session.execute(select(func.count()).select_from(Artifact)).scalar()
        r["audit_entries"] = session.execute(select(func.count()).select_from(AuditEntry)).scalar()
    r["version"] = version.ref
    r["store_bytes"] = sum(p.stat().st_size for p in (root / "ws").rglob("*") if p.is_file())
    return r


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        found: dict[str, Any] = {}
        for key, inner in value.items():
            found.update(flatten(inner, f"{prefix}{key}."))
        return found
    return {prefix[:-1]: value}


def run_mlflow(s: dict) -> dict:
    root = Path(s["scratch"])
    r: dict[str, Any] = {}

    def load():
        import mlflow
        import yaml
        from mlflow import MlflowClient

        return mlflow, yaml, MlflowClient

    mlflow, yaml, MlflowClient = timed_import(r, load)
    import logging

    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    run_dir = Path(s["run"])

    def init():
        mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
        return mlflow.create_experiment("bench", artifact_location=(root / "mlartifacts").as_uri())

    experiment = step(r, "init", init)
    params = {k: "" if v is None else str(v) for k, v in
              flatten(yaml.safe_load((run_dir / "config.yaml").read_text())).items()}
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    evaluation = json.loads((run_dir / "eval.json").read_text())
    final = {k: float(v) for k, v in flatten({split: evaluation[split] for split in ("validation", "test")}).items()
             if isinstance(v, (int, float)) and not isinstance(v, bool)}

    def record():
        with mlflow.start_run(experiment_id=experiment, run_name=RUN_ID) as run:
            mlflow.log_params(params)
            started = time.perf_counter()
            for line in lines:
                mlflow.log_metrics({k: float(v) for k, v in line.items() if k != "step"}, step=line["step"])
            r["log_metrics_seconds"] = time.perf_counter() - started
            mlflow.log_metrics(final)
            started = time.perf_counter()
            mlflow.log_artifacts(str(run_dir))
            r["log_artifacts_seconds"] = time.perf_counter() - started
        return run

    run = step(r, "record", record)

    def record_batched():
        # The same record with the metric history sent in one log_batch call instead of one call per step.
        from mlflow.entities import Metric, Param

        client = MlflowClient()
        with mlflow.start_run(experiment_id=experiment, run_name=RUN_ID + "-batched") as batched:
            now = int(time.time() * 1000)
            history = [Metric(k, float(v), now, line["step"]) for line in lines for k, v in line.items() if k != "step"]
            history += [Metric(k, v, now, 0) for k, v in final.items()]
            client.log_batch(batched.info.run_id, metrics=history, params=[Param(k, v) for k, v in params.items()])
            mlflow.log_artifacts(str(run_dir))
        return batched

    batched = step(r, "record_batched", record_batched)

    def register():
        # MLflow 3's register_model("runs:/ID/model") needs an MLflow-logged model (an MLmodel file); a
        # training run's plain weights folder is registered with the client calls register_model wraps.
        client = MlflowClient()
        client.create_registered_model(MODEL_NAME)
        return client.create_model_version(MODEL_NAME, source=f"{run.info.artifact_uri}/model", run_id=run.info.run_id)

    version = step(r, "register", register)
    r["version"] = f"{MODEL_NAME}@v{version.version}"
    r["params"], r["metric_steps"], r["final_metrics"] = len(params), len(lines), len(final)
    # The first run's store: the database (which also holds the batched run's rows) and its artifact copy.
    extra = Path(batched.info.artifact_uri.removeprefix("file://")).parent
    r["store_bytes"] = sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and extra not in p.parents)
    return r


WORKERS = {"data-tunelab-api": data_tunelab_api, "data-dvc-api": data_dvc_api,
           "data-tunelab-cli": data_tunelab_cli, "data-dvc-cli": data_dvc_cli,
           "run-tunelab": run_tunelab, "run-mlflow": run_mlflow}


def worker(name: str, s: dict) -> None:
    os.environ.update(QUIET_ENV)
    # DVC keeps its hash/state databases in a per-machine folder (/var/tmp/dvc); keep them in the scratch folder.
    os.environ["DVC_SITE_CACHE_DIR"] = str(Path(s["scratch"]) / "dvc-site-cache")
    result = WORKERS[name](s)
    result.setdefault("process_peak_rss_mb", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    emit(result)


# ---- the parent ----------------------------------------------------------------------------------
def side(name: str, settings: dict) -> dict:
    """One worker in a fresh process with a fresh scratch folder, removed afterwards."""
    scratch = SCRATCH / name
    remove(scratch)
    scratch.mkdir(parents=True)
    try:
        return measure(__file__, name, {**settings, "scratch": str(scratch)})
    finally:
        remove(scratch)


def remove(folder: Path) -> None:
    """rmtree that also removes the read-only files tunelab and DVC keep in their stores."""
    def force(func, path, _exc):
        os.chmod(os.path.dirname(path), 0o700)
        if os.path.lexists(path) and not os.path.isdir(path):
            os.chmod(path, 0o600)
        func(path)

    if folder.exists():
        shutil.rmtree(folder, onerror=force)


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "n/a"


def table(title: str, peer: str, ours: dict, theirs: dict, steps: list[tuple[str, str, str]]) -> None:
    """steps: (label, tunelab's key, the peer's key); each entry holds seconds and peak_rss_mb."""
    print(f"\n== {title}")
    print(f"{'':34}{'tunelab s':>10}{peer + ' s':>10}{'ratio':>8}   {'tunelab MB':>11}{peer + ' MB':>11}{'ratio':>8}")
    for label, key_ours, key_theirs in steps:
        if key_ours not in ours or key_theirs not in theirs:
            continue
        a, b = ours[key_ours], theirs[key_theirs]
        print(f"{label:34}{a['seconds']:>10.3f}{b['seconds']:>10.3f}{ratio(a['seconds'], b['seconds']):>8}   "
              f"{a['peak_rss_mb']:>11.0f}{b['peak_rss_mb']:>11.0f}{ratio(a['peak_rss_mb'], b['peak_rss_mb']):>8}")


def totals(result: dict, keys: list[str] | None) -> None:
    """result["total"]: the whole worker process, or (keys given) the sum of those steps and their highest peak."""
    if keys is None:
        result["total"] = {"seconds": result["process_seconds"], "peak_rss_mb": result["process_peak_rss_mb"]}
    else:
        result["total"] = {"seconds": sum(result[k]["seconds"] for k in keys),
                           "peak_rss_mb": max(result[k]["peak_rss_mb"] for k in keys)}


DATA_STEPS = [("import", "import"), ("init", "init"), ("add v1", "add_v1"), ("re-add unchanged (no-op)", "readd"),
              ("add v2 (1% rows changed)", "add_v2")]


def bench_data(sizes: list[int], modes: list[str], raw: dict) -> None:
    for mb in sizes:
        s = make_jsonl(mb)
        for mode in modes:
            theirs = side(f"data-dvc-{mode}", s)
            ours = side(f"data-tunelab-{mode}", s)
            commands = ["init", "add_v1", "readd", "add_v2"] if mode == "cli" else None
            totals(ours, commands)
            totals(theirs, commands)
            how = ("in-process: tunelab add_version vs dvc.repo.Repo.add" if mode == "api" else
                   "CLI processes: `tunelab data add` vs `dvc add` (start-up + imports included)")
            last = "all four commands" if mode == "cli" else "whole worker process"
            table(f"dataset versioning, {mb} MB JSONL ({s['rows']:,} rows, v2 changes {s['changed']:,}), {how}",
                  "DVC", ours, theirs, [(label, key, key) for label, key in DATA_STEPS] + [(last, "total", "total")])
            if mode == "cli":
                print("   (tunelab data add also counts the rows, streaming the file once; dvc add does not)")
            raw[f"data-{mb}mb-{mode}"] = {"input": s, "tunelab": ours, "dvc": theirs}


def bench_run(weights_mb: int, raw: dict) -> None:
    info = make_run_folder(weights_mb)
    theirs = side("run-mlflow", info)
    ours = side("run-tunelab", info)
    for r in (ours, theirs):
        r["record_register"] = {"seconds": r["record"]["seconds"] + r["register"]["seconds"],
                                "peak_rss_mb": max(r["record"]["peak_rss_mb"], r["register"]["peak_rss_mb"])}
        totals(r, None)
    steps = [("import", "import", "import"), ("init (db + migrations)", "init", "init"),
             ("record run", "record", "record"), ("record run (MLflow: one log_batch)", "record", "record_batched"),
             ("register model version", "register", "register"),
             ("record + register", "record_register", "record_register"),
             ("whole worker process", "total", "total")]
    table(f"run tracking + registry: run folder of {info['files']} files, {info['bytes'] / MB:.0f} MB "
          f"({weights_mb} MB safetensors, 500 metric lines), in-process", "MLflow", ours, theirs, steps)
    print(f"   tunelab: config + sha256, environment ({ours['collect_environment_seconds']:.2f}s of the record), "
          f"3 input hashes, eval.json metrics, sha256 of {ours['artifacts_hashed']} artifacts (not copied), "
          f"{ours['audit_entries']} hash-chained audit entries, a model card; store {ours['store_bytes'] / MB:.1f} MB")
    print(f"   MLflow: {theirs['params']} params, {theirs['metric_steps']} steps x 6 metrics "
          f"({theirs['log_metrics_seconds']:.2f}s in per-step calls) + {theirs['final_metrics']} final metrics, "
          f"a copy of the run folder ({theirs['log_artifacts_seconds']:.2f}s, no hashes), a model version; "
          f"store {theirs['store_bytes'] / MB:.1f} MB")
    raw["run"] = {"input": info, "tunelab": ours, "mlflow": theirs}


def versions() -> dict[str, str]:
    import importlib.metadata as md

    found = {}
    for name in ("tunelab", "dvc", "dvc-data", "mlflow-skinny", "mlflow", "sqlalchemy"):
        try:
            found[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="5 MB data and 10 MB weights")
    parser.add_argument("--part", choices=["data", "run", "both"], default="both")
    parser.add_argument("--mode", choices=["api", "cli", "both"], default="both", help="dataset versioning only")
    parser.add_argument("--sizes", help="data sizes in MB, comma-separated (default 50,500; --quick 5)")
    parser.add_argument("--weights-mb", type=int, help="model.safetensors size (default 90; --quick 10)")
    parser.add_argument("--keep-data", action="store_true", help="keep generated inputs over 100 MB")
    add_worker_args(parser)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, json.loads(args.settings))
        return
    os.environ.update(QUIET_ENV)
    sizes = [int(x) for x in args.sizes.split(",")] if args.sizes else ([5] if args.quick else [50, 500])
    weights = args.weights_mb or (10 if args.quick else 90)
    modes = ["api", "cli"] if args.mode == "both" else [args.mode]
    found = versions()
    print("versions: " + ", ".join(f"{k} {v}" for k, v in found.items()) + f"; {os.cpu_count()} CPUs")
    raw: dict[str, Any] = {"versions": found}
    try:
        if args.part in ("data", "both"):
            bench_data(sizes, modes, raw)
        if args.part in ("run", "both"):
            bench_run(weights, raw)
    finally:
        remove(SCRATCH)
        if not args.keep_data:
            for file in INPUTS.glob("data-*mb*.jsonl"):
                if file.stat().st_size > 100 * MB:
                    file.unlink()
                    file.with_name(file.name.replace("-v2", "").replace(".jsonl", ".json")).unlink(missing_ok=True)
    print("\nraw: " + json.dumps(raw))


if __name__ == "__main__":
    main()
