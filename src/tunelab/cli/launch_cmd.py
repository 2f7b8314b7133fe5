"""`tunelab launch`: any tunelab command on several processes and machines, through torchrun."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from tunelab.cli.app import STATE, app


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def launch(
    ctx: typer.Context,
    processes: Annotated[int | None, typer.Option("--processes", "-n", help="Processes on this machine; default: "
                                                  "one per GPU, or 2 without one.")] = None,
    nodes: Annotated[int, typer.Option(help="Machines taking part (run the same command on each).")] = 1,
    rendezvous: Annotated[str | None, typer.Option(help="HOST:PORT where the machines meet (one machine's address, "
                                                   "a free port), the same on every machine.")] = None,
    node_rank: Annotated[int | None, typer.Option(help="This machine's rank (0 holds the run folder); default: "
                                                  "ranked as the machines join.")] = None,
    backend: Annotated[str, typer.Option(help="torchrun (this machine's share; run it on every machine) or ray "
                                         "(Ray Train places -n workers on the cluster).")] = "torchrun",
    ray_address: Annotated[str | None, typer.Option("--ray-address", help="ray: the cluster; default: a local "
                                                    "instance.")] = None,
    worker_cpus: Annotated[int, typer.Option("--worker-cpus", min=1, help="ray: CPUs (torch threads) per "
                                             "worker.")] = 1,
    worker_gpus: Annotated[float, typer.Option("--worker-gpus", min=0, help="ray: GPUs per worker.")] = 0.0,
    ray_storage: Annotated[str | None, typer.Option("--ray-storage", help="ray: where Ray Train keeps its run "
                                                    "state; default: the tunelab cache.")] = None,
) -> None:
    """Run `tunelab ARGS` (train CONFIG.yaml ...) on N processes per machine: torchrun, c10d rendezvous;
    or on N Ray Train workers (--backend ray).

    Only the process of rank 0 writes the run folder; other machines need their own copy of the config
    and data at the same relative paths, and no shared filesystem (docs/scaling.md)."""
    import torch

    from tunelab.errors import ConfigError, TunelabError
    from tunelab.recipes.launch import LaunchPlan, ray_launch, torchrun_command

    if not ctx.args:
        raise TunelabError("no command to launch", fix="tunelab launch -n 2 train CONFIG.yaml [key=value ...]")
    count = processes or (torch.cuda.device_count() or 2)
    flags = [f for f, on in (("--debug", STATE["debug"]), ("--quiet", STATE["quiet"])) if on]
    if backend == "ray":
        ray_launch([*flags, *ctx.args], count, address=ray_address, cpus=worker_cpus, gpus=worker_gpus,
                   storage=ray_storage)
        return
    if backend != "torchrun":
        raise ConfigError(f"--backend {backend!r} is not a launcher", fix="use torchrun or ray")
    plan = LaunchPlan(processes=count, nodes=nodes, rendezvous=rendezvous, node_rank=node_rank)
    command = torchrun_command(plan, [*flags, *ctx.args])
    env = dict(os.environ)
    if not torch.cuda.is_available():
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // count)))  # CPU processes share cores
    os.execve(command[0], command, env)
