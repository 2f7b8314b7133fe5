"""The same loop under `accelerate launch` with 2 CPU processes (gloo) matches one process: DDP, FSDP2
and DeepSpeed ZeRO-1/2 (engine/accel.py, engine/sharding.py); sharded runs resume bit-exact after a kill."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
import torch
from safetensors.torch import load_file

from tests.test_causal_lm import lm_config  # noqa: F401  (fixture)
from tunelab.config import load_config
from tunelab.recipes.launch import accelerate_command
from tunelab.recipes.train import train
from tunelab.server.runner import free_port


def losses(run: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()
            if "split" not in json.loads(line)]


def launch(*args: str, processes: int = 2, env: dict[str, str] | None = None,
           cwd: Path | None = None) -> subprocess.CompletedProcess:
    """`tunelab --quiet ARGS` under `accelerate launch` with `processes` CPU processes (the command line
    server jobs run with)."""
    command = accelerate_command(processes, free_port(), ["--quiet", *args])
    return subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=cwd,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})


def launch_two(path: Path, name: str, *overrides: str,
               env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return launch("train", str(path), f"output.name={name}", *overrides, env=env)


def only_run(parent: Path, prefix: str) -> Path:
    runs = [p for p in parent.iterdir() if p.name.startswith(prefix)]
    assert len(runs) == 1, f"one run folder expected for {prefix}, found {runs}"
    return runs[0]


def max_difference(a: Path, b: Path) -> float:
    first, second = load_file(a), load_file(b)
    assert first.keys() == second.keys()
    return max(float((first[k] - second[k]).abs().max()) for k in first)


def bit_equal(a: Path, b: Path) -> bool:
    first, second = load_file(a), load_file(b)
    return first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


@pytest.mark.slow
def test_two_processes_match_one(make_config, tmp_path):
    # batch 5 splits 3/2 across the processes, and the epoch (96 rows, 10 steps) ends with a 1-row batch
    # that leaves one process empty: the global loss normalisation must still be exact.
    body = {"max_steps": 10, "batch_size": 5, "gradient_accumulation_steps": 2, "learning_rate": 1e-2}
    path = make_config("dist", train=body, model={"dropout": 0.0})
    single = train(load_config(path, ["output.name=single"]))
    result = launch_two(path, "double")
    assert result.returncode == 0, result.stderr[-3000:]
    runs = [p for p in single.run.path.parent.iterdir() if p.name.startswith("double")]
    assert len(runs) == 1, "every process must write into one run folder"
    record = json.loads((runs[0] / "run.json").read_text())
    assert record["processes"] == 2 and record["status"] == "succeeded"
    assert losses(runs[0]) == pytest.approx(losses(single.run.path), rel=1e-5, abs=1e-6)
    assert (runs[0] / "model" / "model.safetensors").is_file()


@pytest.mark.slow
def test_two_processes_match_one_for_a_packed_causal_lm(lm_config):
    """Rows hold different numbers of trained tokens; normalising by the global trained-token count
    keeps 2 processes equal to 1 (batch 3 splits 2/1)."""
    path = lm_config("dist-lm", train={"max_steps": 4, "batch_size": 3}, lm={"packing": True},
                     eval={"base": False, "generate_samples": 0})
    single = train(load_config(path, ["output.name=single"]))
    result = launch_two(path, "double")
    assert result.returncode == 0, result.stderr[-3000:]
    double = next(p for p in single.run.path.parent.iterdir() if p.name.startswith("double"))
    assert losses(double) == pytest.approx(losses(single.run.path), rel=1e-5, abs=1e-6)


# ---- FSDP2 and DeepSpeed ZeRO ---------------------------------------------------------------------
CLASSIFIER = {"max_steps": 8, "batch_size": 5, "gradient_accumulation_steps": 2, "learning_rate": 1e-2}


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["fsdp", "deepspeed-1", "deepspeed-2", "deepspeed-3"])
def test_sharded_classifier_matches_one_process(make_config, strategy):
    """The loss normalisation holds under sharding: FSDP2 reduce-scatters and DeepSpeed ZeRO reduces
    the same gradient DDP would, and the final model is gathered into one ordinary folder. (ZeRO-3
    re-flattens and partitions the parameters for its optimizer: its float32 noise is larger, 3e-5 of
    the loss after 8 steps at learning rate 1e-2.)"""
    path = make_config("shard", train=CLASSIFIER, model={"dropout": 0.0})
    single = train(load_config(path, ["output.name=single"]))
    name, _, stage = strategy.partition("-")
    extra = [f"distributed.strategy={name}"] + ([f"distributed.deepspeed.stage={stage}"] if stage else [])
    result = launch_two(path, "sharded", *extra)
    assert result.returncode == 0, result.stderr[-3000:]
    run = only_run(single.run.path.parent, "sharded")
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "succeeded" and record["processes"] == 2 and record["distributed"] == name
    tolerance = 1e-4 if stage == "3" else 1e-5
    assert losses(run) == pytest.approx(losses(single.run.path), rel=tolerance, abs=1e-6)
    # 8 steps at learning rate 1e-2: float32 reduction-order noise grows to ~1e-5 in the weights
    weights = max_difference(run / "model" / "model.safetensors", single.run.path / "model" / "model.safetensors")
    assert weights < 10 * tolerance


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["fsdp", "deepspeed-3"])
def test_sharded_lora_causal_lm_matches_one_process(lm_config, strategy):
    """LoRA on a causal LM with sharded parameters (FSDP2 units, ZeRO-3 partitions): held-out
    generation runs on both processes in lockstep (every forward pass gathers parameters).

    Under ZeRO-3 transformers loads the model inside `zero.Init`, which draws from the RNG differently,
    so LoRA's A matrices start from other (equally random) values than in one process: its first loss
    is the same starting model's (B is zero), the curve after it is not comparable step by step."""
    path = lm_config("shard-lm", train={"max_steps": 4, "batch_size": 3}, eval={"base": False, "generate_samples": 2})
    single = train(load_config(path, ["output.name=single"]))
    name, _, stage = strategy.partition("-")
    result = launch_two(path, "sharded", f"distributed.strategy={name}",
                        *([f"distributed.deepspeed.stage={stage}"] if stage else []))
    assert result.returncode == 0, result.stderr[-3000:]
    run = only_run(single.run.path.parent, "sharded")
    adapter = "adapter/adapter_model.safetensors"
    if stage == "3":
        assert losses(run)[0] == pytest.approx(losses(single.run.path)[0], rel=1e-6)
        assert losses(run)[-1] < losses(run)[0]
        assert load_file(run / adapter).keys() == load_file(single.run.path / adapter).keys()
    else:
        assert losses(run) == pytest.approx(losses(single.run.path), rel=1e-5, abs=1e-6)
        assert max_difference(run / adapter, single.run.path / adapter) < 1e-5
    assert len((run / "generations.jsonl").read_text().splitlines()) == 2


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["fsdp", "deepspeed-2", "deepspeed-3"])
def test_sharded_run_resumes_bit_exact_after_a_kill(make_config, strategy):
    """Both processes are SIGKILLed while the second checkpoint (step 4 of 12 in the epoch) is being
    written; the resumed run reads step 2, which only the main process wrote, and sends each process
    its shard of the optimizer state and its RNG: the same losses and bit-identical weights."""
    body = {"max_steps": 6, "batch_size": 8, "checkpoint_every": 2, "keep_checkpoints": 2, "learning_rate": 1e-2}
    path = make_config("resume", train=body, model={"dropout": 0.1})
    name, _, stage = strategy.partition("-")
    chosen = [f"distributed.strategy={name}"] + ([f"distributed.deepspeed.stage={stage}"] if stage else [])
    whole = launch_two(path, "whole", *chosen)
    assert whole.returncode == 0, whole.stderr[-3000:]
    crashed = launch_two(path, "crashed", *chosen, env={"TUNELAB_FAULT": "checkpoint.write@2"})
    assert crashed.returncode != 0
    parent = path.parent / "runs"
    broken = only_run(parent, "crashed")
    assert sorted(p.name for p in (broken / "checkpoints").glob("step-*")) == ["step-0000002"]
    resumed = launch("train", "--resume", str(broken))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    reference = only_run(parent, "whole")
    assert losses(broken) == losses(reference)
    assert bit_equal(broken / "model" / "model.safetensors", reference / "model" / "model.safetensors")


# ---- several machines without a shared filesystem -------------------------------------------------
def machine_homes(tmp_path: Path, config: Path) -> dict[str, Path]:
    """Two working directories, each with its own copy of the config (job.yaml) and data."""
    body = yaml.safe_load(config.read_text())
    homes = {}
    for node in ("a", "b"):
        home = homes[node] = tmp_path / f"node-{node}"
        home.mkdir()
        for source in body["data"].values():
            (home / Path(source).name).write_bytes(Path(source).read_bytes())
        local = {**body, "data": {s: Path(p).name for s, p in body["data"].items()}, "output": {"dir": "runs"}}
        (home / "job.yaml").write_text(yaml.safe_dump(local))
    return homes


def launch_machines(tmp_path: Path, args: dict[str, list[str]],
                    env: dict[str, str] | None = None) -> dict[str, subprocess.CompletedProcess]:
    """`tunelab launch --nodes 2 ARGS` from each machine's working directory with its own cache: two
    machines that share nothing but the rendezvous address."""
    endpoint = f"127.0.0.1:{free_port()}"
    started = {}
    for node, node_args in args.items():
        command = [sys.executable, "-m", "tunelab", "--quiet", "launch", "-n", "1", "--nodes", "2",
                   "--rendezvous", endpoint, *node_args]
        node_env = {**os.environ, "OMP_NUM_THREADS": "1", "TUNELAB_CACHE": str(tmp_path / f"cache-{node}"),
                    **(env or {})}
        started[node] = subprocess.Popen(command, cwd=tmp_path / f"node-{node}", env=node_env,
                                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    results = {}
    for node, process in started.items():
        out, err = process.communicate(timeout=300)
        results[node] = subprocess.CompletedProcess(process.args, process.returncode, out, err)
    return results


def launch_nodes(tmp_path: Path, config: Path,
                 overrides: dict[str, list[str]]) -> dict[str, subprocess.CompletedProcess]:
    machine_homes(tmp_path, config)
    return launch_machines(tmp_path, {n: ["train", "job.yaml", "output.name=two", *o] for n, o in overrides.items()})


@pytest.mark.slow
def test_two_machines_without_a_shared_path(make_config, tmp_path):
    """torchrun --nnodes 2 under `tunelab launch`, c10d rendezvous: the machine that gets rank 0 holds
    the one run folder, complete (FSDP2 checkpoints included, every shard sent to it); the other
    leaves nothing in its working directory beyond the copies it was given."""
    body = {"max_steps": 6, "batch_size": 8, "checkpoint_every": 3, "learning_rate": 1e-2}
    path = make_config("nodes", train=body, model={"dropout": 0.0})
    single = train(load_config(path, ["output.name=single"]))
    results = launch_nodes(tmp_path, path, {"a": ["distributed.strategy=fsdp"], "b": ["distributed.strategy=fsdp"]})
    for node, result in results.items():
        assert result.returncode == 0, f"node {node}: {result.stderr[-3000:]}"
    homes = {node: tmp_path / f"node-{node}" for node in results}
    holders = [node for node, home in homes.items() if (home / "runs").exists()]
    assert len(holders) == 1, f"exactly one machine writes a run folder, found {holders}"
    other = next(node for node in homes if node not in holders)
    assert sorted(p.name for p in homes[other].iterdir()) == sorted(["job.yaml", "train.jsonl", "validation.jsonl",
                                                                     "test.jsonl"])
    run = only_run(homes[holders[0]] / "runs", "two")
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "succeeded" and record["processes"] == 2 and record["distributed"] == "fsdp"
    step = run / "checkpoints" / "step-0000006"
    assert (step / "rng-1.pt").is_file()  # the other machine's RNG, sent over
    # each machine keeps its own optimizer shard; the other machine's sits in its cache, named in the manifest
    assert (step / "optimizer-0.pt").is_file() and not (step / "optimizer-1.pt").exists()
    assert (tmp_path / f"cache-{other}" / "checkpoint-shards" / run.name / step.name / "optimizer-1.pt").is_file()
    assert len(json.loads((step / "manifest.json").read_text())["shards"]) == 2
    assert losses(run) == pytest.approx(losses(single.run.path), rel=1e-5, abs=1e-6)
    assert max_difference(run / "model" / "model.safetensors", single.run.path / "model" / "model.safetensors") < 1e-4


@pytest.mark.slow
def test_machines_with_different_configs_are_refused(make_config, tmp_path):
    """Each machine reads its own copy of the config: a copy that differs stops every process with one line."""
    path = make_config("differ", train={"max_steps": 2})
    results = launch_nodes(tmp_path, path, {"a": [], "b": ["train.learning_rate=0.5"]})
    for node, result in results.items():
        assert result.returncode != 0
        assert "the launched processes read different configs" in result.stderr, f"node {node}: {result.stderr[-2000:]}"
    assert not any((tmp_path / f"node-{n}" / "runs").exists() and any((tmp_path / f"node-{n}" / "runs").iterdir())
                   for n in results)


@pytest.mark.slow
def test_ray_train_workers_match_one_process(make_config, tmp_path):
    """`tunelab launch --backend ray -n 2`: Ray Train's TorchTrainer places two workers on a local Ray,
    forms their gloo group and sets their ranks; worker 0 writes the run folder, which equals 1 process."""
    path = make_config("ray", train=CLASSIFIER, model={"dropout": 0.0})
    single = train(load_config(path, ["output.name=single"]))
    result = subprocess.run([sys.executable, "-m", "tunelab", "--quiet", "launch", "--backend", "ray", "-n", "2",
                             "--ray-storage", str(tmp_path / "ray"), "train", str(path), "output.name=onray"],
                            capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    run = only_run(single.run.path.parent, "onray")
    assert json.loads((run / "run.json").read_text())["processes"] == 2
    assert losses(run) == pytest.approx(losses(single.run.path), rel=1e-5, abs=1e-6)


@pytest.mark.slow
def test_two_machines_resume_after_a_kill_from_their_own_shards(make_config, tmp_path):
    """Both machines are killed while the second checkpoint is written. The machine of rank 0 resumes
    from its run folder; the other needs only a copy of the run's config.yaml, and reads its optimizer
    shard from its own cache: the result is bit-identical to an uninterrupted two-machine run."""
    body = {"max_steps": 6, "batch_size": 8, "checkpoint_every": 2, "learning_rate": 1e-2}
    path = make_config("resume-nodes", train=body, model={"dropout": 0.1})
    homes = machine_homes(tmp_path, path)
    fsdp = ["train", "job.yaml", "distributed.strategy=fsdp"]
    whole = launch_machines(tmp_path, {n: [*fsdp, "output.name=whole"] for n in homes})
    assert all(r.returncode == 0 for r in whole.values()), whole["a"].stderr[-3000:]
    crashed = launch_machines(tmp_path, {n: [*fsdp, "output.name=crashed"] for n in homes},
                              env={"TUNELAB_FAULT": "checkpoint.write@2"})
    assert all(r.returncode != 0 for r in crashed.values())
    holder = next(n for n, home in homes.items() if any((home / "runs").glob("crashed-*")))
    other = next(n for n in homes if n != holder)
    broken = only_run(homes[holder] / "runs", "crashed")
    copy = homes[other] / "runs" / broken.name
    copy.mkdir(parents=True)
    (copy / "config.yaml").write_bytes((broken / "config.yaml").read_bytes())
    # the run folder's machine must get rank 0 again: pinned with --node-rank (c10d ranks as machines join)
    ranks = {holder: "0", other: "1"}
    resumed = launch_machines(tmp_path, {n: ["--node-rank", ranks[n], "train", "--resume", f"runs/{broken.name}"]
                                         for n in homes})
    assert all(r.returncode == 0 for r in resumed.values()), resumed[holder].stderr[-3000:]
    assert sorted(p.name for p in copy.iterdir()) == ["config.yaml"]  # still nothing written there
    reference = next(run for home in homes.values() for run in home.glob("runs/whole-*"))
    assert losses(broken) == losses(reference)
    assert bit_equal(broken / "model" / "model.safetensors", reference / "model" / "model.safetensors")


def test_launch_builds_torchrun_commands_and_refuses_incomplete_plans():
    """`tunelab launch`'s torchrun line: standalone on one machine, c10d across machines, static with a
    pinned --node-rank; a plan that cannot meet is refused with the flag to set."""
    from tunelab.errors import ConfigError
    from tunelab.recipes.launch import LaunchPlan, torchrun_command

    one = torchrun_command(LaunchPlan(processes=4), ["train", "job.yaml"])
    assert one[1:] == ["-m", "torch.distributed.run", "--nproc_per_node", "4", "--nnodes", "1", "--standalone",
                       "-m", "tunelab", "train", "job.yaml"]
    joined = torchrun_command(LaunchPlan(processes=8, nodes=2, rendezvous="10.0.0.1:29500"), ["train", "j.yaml"])
    assert joined[joined.index("--rdzv_backend") + 1] == "c10d" and "10.0.0.1:29500" in joined
    pinned = torchrun_command(LaunchPlan(processes=8, nodes=2, rendezvous="[fe80::1]:29500", node_rank=1), ["x"])
    assert pinned[pinned.index("--node_rank") + 1] == "1" and pinned[pinned.index("--master_addr") + 1] == "fe80::1"
    for plan, message in [(LaunchPlan(nodes=2), "--nodes 2 needs --rendezvous"),
                          (LaunchPlan(nodes=2, rendezvous="head"), "is not HOST:PORT"),
                          (LaunchPlan(nodes=2, rendezvous="head:1", node_rank=2), "--node-rank 2 is outside 0..1")]:
        with pytest.raises(ConfigError, match=message):
            torchrun_command(plan, ["train"])
