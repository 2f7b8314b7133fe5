"""The command lines that start tunelab on several processes: torchrun for `tunelab launch` (one
machine or several, c10d rendezvous), `accelerate launch` for server jobs that ask for processes.

tunelab writes no launcher of its own: these are the engines users already run on their clusters, and
each process finds its rank, the world size and the rendezvous in the environment they set.
"""

from __future__ import annotations

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
            raise ConfigError(f"--rendezvous {self.rendezvous!r} is not HOST:PORT", fix="e.g. --rendezvous 10.0.0.1:29500")
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
