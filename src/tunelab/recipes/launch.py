"""The command lines that start tunelab on several processes: torchrun for `tunelab launch` (one
machine or several, c10d rendezvous), Ray Train's TorchTrainer for `tunelab launch --backend ray`,
`accelerate launch` for server jobs that ask for processes.

tunelab writes no launcher of its own: these are the engines users already run on their clusters, and
each process finds its rank, the world size and the rendezvous in the environment they set.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass

from tunelab.errors import ConfigError

_ENDPOINT = re.compile(r"^(?P<host>[A-Za-z0-9._-]+|\[[0-9A-Fa-f:]+\]):(?P<port>\d{1,5})$")


@dataclass(frozen=True)
class LaunchPlan:
    """`processes` per machine, on `nodes` machines meeting at `rendezvous` (host:port of any one of
    them, the same on every machine); `node_rank` pins this machine's place (static rendezvous),
    otherwise the machines are ranked as they join (c10d)."""

    processes: int = 1
    nodes: int = 1
    rendezvous: str | None = None
    node_rank: int | None = None
    run_id: str = "tunelab"

    def check(self) -> None:
        if self.processes < 1 or self.nodes < 1:
            raise ConfigError("--processes and --nodes must be at least 1")
        if self.nodes > 1 and self.rendezvous is None:
            raise ConfigError(f"--nodes {self.nodes} needs --rendezvous HOST:PORT",
                              fix="name one machine's address and a free port, the same on every machine")
        if self.rendezvous is not None and not _ENDPOINT.match(self.rendezvous):
            raise ConfigError(f"--rendezvous {self.rendezvous!r} is not HOST:PORT",
                              fix="e.g. --rendezvous 10.0.0.1:29500")
        if self.node_rank is not None and not 0 <= self.node_rank < self.nodes:
            raise ConfigError(f"--node-rank {self.node_rank} is outside 0..{self.nodes - 1}")


def torchrun_command(plan: LaunchPlan, args: list[str]) -> list[str]:
    """`python -m torch.distributed.run ... -m tunelab ARGS` for this machine's share of the plan."""
    plan.check()
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(plan.processes),
               "--nnodes", str(plan.nodes)]
    if plan.rendezvous is None:
        command += ["--standalone"]
    elif plan.node_rank is not None:
        host, port = plan.rendezvous.rsplit(":", 1)
        command += ["--node_rank", str(plan.node_rank), "--master_addr", host.strip("[]"), "--master_port", port]
    else:
        command += ["--rdzv_backend", "c10d", "--rdzv_endpoint", plan.rendezvous, "--rdzv_id", plan.run_id]
    return [*command, "-m", "tunelab", *args]


def accelerate_command(processes: int, port: int, args: list[str]) -> list[str]:
    """`accelerate launch` with `processes` processes on this machine (server jobs)."""
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
            "--main_process_port", str(port), "-m", "tunelab", *args]


def ray_launch(args: list[str], workers: int, *, address: str | None = None, cpus: int = 1, gpus: float = 0.0,
               storage: str | None = None) -> None:
    """Run `tunelab ARGS` on `workers` Ray Train workers (TorchTrainer): Ray places the workers, forms
    the process group (gloo, or nccl with GPUs) and sets each one's rank; tunelab runs in each as under
    torchrun. The run folder is written by worker 0, in its working directory (the driver's, which a
    cluster's nodes must have at the same path, as with several machines: docs/scaling.md)."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from tunelab.errors import TrainingError
    from tunelab.paths import cache_dir
    from tunelab.sweep.ray_backend import start_ray, worker_error_line

    if workers < 1:
        raise ConfigError("--processes must be at least 1")
    import ray

    started = start_ray(address)
    try:
        resources = {"CPU": cpus, **({"GPU": gpus} if gpus else {})}
        trainer = TorchTrainer(
            _ray_worker, train_loop_config={"args": args, "cwd": os.getcwd(), "threads": cpus},
            torch_config=TorchConfig(backend="nccl" if gpus else "gloo"),
            scaling_config=ScalingConfig(num_workers=workers, use_gpu=gpus > 0, resources_per_worker=resources),
            run_config=RunConfig(name=f"tunelab-{os.getpid()}", storage_path=storage or str(cache_dir() / "ray-train")),
        )
        try:
            trainer.fit()
        except Exception as err:  # Ray wraps the worker's error (a traceback) in its own
            raise TrainingError(f"the Ray Train workers failed: {worker_error_line(err, RuntimeError)}") from None
    finally:
        if started:
            ray.shutdown()


def _ray_worker(settings: dict) -> None:
    """One Ray Train worker: the driver's working directory, its thread budget, then the tunelab command."""
    import importlib

    import torch
    import typer

    from tunelab.errors import TunelabError

    os.chdir(settings["cwd"])
    torch.set_num_threads(settings["threads"])
    # The worker runs the tunelab program itself, as torchrun runs `-m tunelab`: the command line is the
    # top of the stack, looked up at run time (a recipe does not build on the CLI), in Ray's process
    # and thread, where Ray has formed the process group.
    app = importlib.import_module("tunelab.cli.main").app
    try:
        typer.main.get_command(app).main(args=settings["args"], prog_name="tunelab", standalone_mode=False)
    except TunelabError as err:
        raise RuntimeError(str(err)) from None

