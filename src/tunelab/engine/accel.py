"""Creating the Accelerator for a config: DDP, FSDP2 or DeepSpeed ZeRO, through Accelerate's plugins.

Accelerate selects FSDP and DeepSpeed only on accelerator devices; on CPU processes (gloo) it would
silently fall back to DDP. There we build the same plugin and set the state Accelerate sets on a GPU,
so CPU runs (our tests, a laptop) go through Accelerate's own FSDP2 and DeepSpeed code paths.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs, DistributedType

from tunelab.errors import ConfigError

if TYPE_CHECKING:
    from tunelab.config import Config

log = logging.getLogger(__name__)


def launched_distributed() -> bool:
    """True under `accelerate launch` / torchrun with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def launched() -> bool:
    """True under `accelerate launch` / torchrun, even with a single process (FSDP2 on one GPU)."""
    return "LOCAL_RANK" in os.environ


def strategy(config: Config) -> str:
    """What this process runs: "single", "ddp", "fsdp" or "deepspeed" (auto is ddp when launched with
    several processes; fsdp and deepspeed apply to a launched single process too)."""
    chosen = config.distributed.strategy
    if chosen in ("fsdp", "deepspeed") and launched():
        return chosen
    if not launched_distributed():
        return "single"
    return "ddp" if chosen == "auto" else chosen


def make_accelerator(config: Config) -> Accelerator:
    from accelerate.state import AcceleratorState, GradientState, PartialState

    if not launched_distributed():
        # Accelerate keeps process-wide singletons; a second run in one process (tests, sweeps)
        # may use another precision, which the shared state would otherwise refuse.
        AcceleratorState._reset_state(True)
        GradientState._reset_state()
        PartialState._reset_state()
        if config.distributed.strategy in ("fsdp", "deepspeed") and not launched():
            log.info("distributed.strategy %s is ignored by a process that was not launched (use `tunelab launch`)",
                     config.distributed.strategy)
    import torch

    mixed = "bf16" if config.train.precision == "bf16" else "no"
    ddp = DistributedDataParallelKwargs(find_unused_parameters=False)
    # Without a GPU, Accelerate only forms a process group (gloo) when told it runs on CPU;
    # otherwise every launched process would silently train alone.
    kind = strategy(config)
    cpu = (launched_distributed() or kind != "single") and not torch.cuda.is_available()
    if not torch.cuda.is_available():
        # DeepSpeed, when installed, is imported by Accelerate's unwrap_model (save_pretrained calls it) and
        # would warn on the console that it found no GPU
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    plugins: dict[str, Any] = {}
    if kind == "fsdp":
        plugins["fsdp_plugin"] = fsdp_plugin(config)
    elif kind == "deepspeed":
        plugins["deepspeed_plugin"] = deepspeed_plugin(config)
    accelerator = Accelerator(mixed_precision=mixed, cpu=cpu, kwargs_handlers=[ddp],
                              step_scheduler_with_optimizer=False, **plugins)
    if cpu and kind != "ddp":
        _engage_on_cpu(accelerator, kind, plugins)
    return accelerator


def fsdp_plugin(config: Config) -> Any:
    from accelerate.utils import FullyShardedDataParallelPlugin

    cfg = config.distributed.fsdp
    # transformer_cls_names_to_wrap None: the plugin wraps the model's _no_split_modules (its blocks).
    return FullyShardedDataParallelPlugin(
        fsdp_version=2, reshard_after_forward=cfg.reshard_after_forward, cpu_offload=cfg.cpu_offload,
        activation_checkpointing=cfg.activation_checkpointing, auto_wrap_policy="transformer_based_wrap",
        transformer_cls_names_to_wrap=cfg.wrap, state_dict_type="FULL_STATE_DICT",
    )


def deepspeed_config(config: Config) -> dict[str, Any]:
    """The DeepSpeed config: distributed.deepspeed.config (file or mapping) with what train.* decides on top."""
    cfg = config.distributed.deepspeed
    base: dict[str, Any] = {}
    if isinstance(cfg.config, str):
        path = Path(cfg.config)
        try:
            base = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise ConfigError(f"distributed.deepspeed.config: cannot read {path} as JSON ({err})",
                              fix="point it at a DeepSpeed JSON config, or give the settings as a mapping") from err
    elif isinstance(cfg.config, dict):
        base = json.loads(json.dumps(cfg.config))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    zero = {**base.get("zero_optimization", {}), "stage": cfg.stage}
    if cfg.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu"}
    if cfg.offload_params:
        zero["offload_param"] = {"device": "cpu"}
    train = config.train
    return {
        **base,
        "zero_optimization": zero,
        # tunelab's batch is global; DeepSpeed counts per process. The loop steps DeepSpeed at each
        # accumulation boundary itself, so a short last step of an epoch stays one update.
        "train_micro_batch_size_per_gpu": max(1, math.ceil(train.batch_size / world)),
        "gradient_accumulation_steps": train.gradient_accumulation_steps,
        "gradient_clipping": train.max_grad_norm or 0.0,
        "bf16": {"enabled": train.precision == "bf16"},
        "fp16": {"enabled": False},
        # our AdamW (param groups, weight-decay exclusions, schedules) is kept; DeepSpeed shards its state
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 10**9,
    }


def deepspeed_plugin(config: Config) -> Any:
    try:
        import deepspeed  # noqa: F401
    except ImportError as err:
        raise ConfigError("distributed.strategy deepspeed needs the deepspeed package",
                          fix="pip install 'tunelab[deepspeed]' (or use distributed.strategy: fsdp)") from err
    from accelerate.utils import DeepSpeedPlugin

    return DeepSpeedPlugin(hf_ds_config=deepspeed_config(config))


def _engage_on_cpu(accelerator: Accelerator, kind: str, plugins: dict[str, Any]) -> None:
    """Set the state Accelerate sets for FSDP / DeepSpeed on a GPU (accelerate/state.py), on gloo."""
    from accelerate.state import PartialState

    state = accelerator.state
    chosen = DistributedType.FSDP if kind == "fsdp" else DistributedType.DEEPSPEED
    state.distributed_type = chosen
    # every later AcceleratorState() copies PartialState's value over its own (as accelerate/state.py does)
    PartialState._shared_state["distributed_type"] = chosen
    if kind == "fsdp":
        state.fsdp_plugin = plugins["fsdp_plugin"]
    else:
        plugin = plugins["deepspeed_plugin"]
        state.deepspeed_plugins = plugin
        plugin.select(_from_accelerator_state=True)


def fit_fsdp_to_model(accelerator: Accelerator, model: Any) -> None:
    """Choose the blocks FSDP2 shards one by one, before `accelerator.prepare`: the model's own
    `_no_split_modules`, less any class that holds the input embeddings — Accelerate shards the input
    embedding as a unit of its own, and a block holding it would shard it twice (BertEmbeddings)."""
    if accelerator.distributed_type != DistributedType.FSDP:
        return
    plugin = accelerator.state.fsdp_plugin
    if plugin.transformer_cls_names_to_wrap:  # distributed.fsdp.wrap
        return
    names = set(getattr(model, "_no_split_modules", None) or [])
    getter = getattr(model, "get_input_embeddings", None)
    embedding = getter() if getter is not None else None
    if embedding is not None:
        names -= {type(m).__name__ for m in model.modules() if any(c is embedding for c in m.modules())}
    present = {type(m).__name__ for m in model.modules()}
    plugin.transformer_cls_names_to_wrap = sorted(names & present) or None
    log.info("FSDP2 shards each of: %s", ", ".join(plugin.transformer_cls_names_to_wrap or ["(the whole model)"]))


def check_distributed(config: Config) -> None:
    """Combinations a sharding strategy cannot run, refused before the run folder exists (the section
    is checked whether or not this process was launched with several, so the answer does not change
    between a laptop try and the cluster)."""
    dist = config.distributed
    objective = config.objective.name if config.objective is not None else None
    sharded_params = dist.strategy == "fsdp" or (dist.strategy == "deepspeed" and dist.deepspeed.stage == 3)
    where = "distributed.strategy fsdp" if dist.strategy == "fsdp" else "DeepSpeed ZeRO-3"
    if sharded_params and objective == "grpo":
        raise ConfigError(f"objective grpo cannot run under {where}: each process samples answers of its own "
                          "length, while sharded parameters need every process in each forward pass",
                          fix="use distributed.strategy: ddp, or deepspeed with distributed.deepspeed.stage 1 or 2")
    if sharded_params and config.method.name == "qlora":
        raise ConfigError(f"method qlora cannot run under {where}: its 4-bit base weights are not shardable here",
                          fix="use method lora (bf16 base) with the same strategy, or distributed.strategy: ddp")
    if dist.strategy == "deepspeed":
        if config.train.l2_sp:
            raise ConfigError("train.l2_sp cannot run under distributed.strategy deepspeed: DeepSpeed steps the "
                              "optimizer inside backward, where L2-SP would add its gradient",
                              fix="set train.l2_sp: 0, or use distributed.strategy: ddp")
        if dist.deepspeed.offload_params and dist.deepspeed.stage != 3:
            raise ConfigError(f"distributed.deepspeed.offload_params needs stage 3 (it is {dist.deepspeed.stage})",
                              fix="set distributed.deepspeed.stage: 3, or offload_params: false")
    if dist.strategy == "fsdp" and config.train.l2_sp:
        raise ConfigError("train.l2_sp cannot run under distributed.strategy fsdp: it anchors the parameters "
                          "before FSDP2 replaces them with their shards", fix="set train.l2_sp: 0, or use "
                          "distributed.strategy: ddp")
    if dist.strategy == "fsdp" and dist.fsdp.activation_checkpointing and config.train.gradient_checkpointing:
        raise ConfigError("train.gradient_checkpointing and distributed.fsdp.activation_checkpointing both "
                          "recompute activations", fix="keep one: distributed.fsdp.activation_checkpointing "
                          "wraps each sharded block")
