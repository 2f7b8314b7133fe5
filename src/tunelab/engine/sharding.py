"""What differs between replicated (one process, DDP), FSDP2 and DeepSpeed ZeRO training: how the
trainable weights, optimizer state and RNG reach the main process for a checkpoint, and how a
checkpoint read there reaches every process again.

Only the main process reads or writes the run folder's weights and loop state; every other process
sends and receives its part through the process group (torch.distributed's state-dict API for FSDP2),
so several machines need no shared filesystem. Optimizer state that is already sharded (FSDP2,
ZeRO) is never gathered: each process writes its own shard on its own machine.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.distributed as dist
from accelerate import Accelerator
from accelerate.utils import DistributedType
from torch import nn


class Sharding:
    """The replicated case: every process holds the same weights and optimizer state."""

    sharded_forward = False  # True when a forward pass needs every process (parameters are sharded)
    # True when each process holds only its part of the optimizer state: each then writes its own
    # checkpoint shard (engine/checkpoint.py) instead of gathering the whole state to one process
    shards_optimizer = False

    def __init__(self, accelerator: Accelerator) -> None:
        self.accelerator = accelerator
        self.main = accelerator.is_main_process
        self.world = accelerator.num_processes

    # -- weights ------------------------------------------------------------------------------
    def trainable_tensors(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """Every trainable parameter, whole, on the main process (others: empty). Call on every process."""
        if not self.main:
            return {}
        return {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}

    def load_tensors(self, model: nn.Module, saved: dict[str, torch.Tensor] | None) -> None:
        """Copy `saved` (read on the main process; None elsewhere) into every process's model."""
        saved = self.from_main(saved)
        with self._whole(model, modify=True):
            copy_tensors(model, saved)

    @contextmanager
    def _whole(self, model: nn.Module, modify: bool = False) -> Iterator[None]:
        """The trainable parameters whole on every process for the block (they are, unless partitioned)."""
        yield

    # -- optimizer ----------------------------------------------------------------------------
    def optimizer_state(self, model: nn.Module, optimizer: Any) -> Any:
        return optimizer.state_dict() if self.main else None

    def load_optimizer(self, model: nn.Module, optimizer: Any, saved: Any) -> None:
        optimizer.load_state_dict(self.from_main(saved))

    def local_optimizer_state(self, model: nn.Module, optimizer: Any) -> dict[str, Any]:
        """This process's part of the optimizer state, as plain tensors (shards_optimizer strategies)."""
        raise NotImplementedError

    def load_local_optimizer(self, model: nn.Module, optimizer: Any, state: dict[str, Any]) -> None:
        raise NotImplementedError

    @contextmanager
    def building_plain(self) -> Iterator[None]:
        """The context in which the main process builds an ordinary, unsharded copy of the model."""
        yield

    @property
    def node(self) -> int:
        """This machine's rank among the launch's machines (torchrun's GROUP_RANK, Ray Train's NODE_RANK;
        0 holds the run folder)."""
        return int(os.environ.get("GROUP_RANK") or os.environ.get("NODE_RANK") or 0)

    # -- the update ---------------------------------------------------------------------------
    def backward(self, loss: torch.Tensor, boundary: bool) -> None:
        self.accelerator.backward(loss)

    def clip_and_step(self, model: nn.Module, optimizer: Any, max_norm: float,
                      check: Callable[[float], None]) -> float:
        """Clip to `max_norm`, `check` the norm (it raises when not finite), update; returns the norm."""
        norm = float(self.accelerator.clip_grad_norm_(model.parameters(), max_norm))
        check(norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return norm

    @contextmanager
    def accumulating(self, model: nn.Module, boundary: bool) -> Iterator[None]:
        """No gradient synchronisation before the accumulation boundary."""
        if boundary or self.world == 1:
            yield
        else:
            with self.accelerator.no_sync(model):
                yield

    # -- per-process state --------------------------------------------------------------------
    def gather(self, value: Any) -> list[Any] | None:
        """Every process's `value`, in rank order, on the main process (None elsewhere)."""
        if self.world == 1:
            return [value]
        out = [None] * self.world if self.main else None
        dist.gather_object(value, out, dst=0)
        return out

    def scatter(self, values: list[Any] | None) -> Any:
        """Rank r receives values[r] (given on the main process)."""
        if self.world == 1:
            return values[0] if values else None
        out = [None]
        dist.scatter_object_list(out, values if self.main else None, src=0)
        return out[0]

    def from_main(self, value: Any) -> Any:
        """The main process's `value` on every process."""
        if self.world == 1:
            return value
        box = [value if self.main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def on_main(self, read: Callable[[], Any], *, share: bool = False) -> Any:
        """`read()` on the main process (None elsewhere; with `share`, its value on every process). A
        failure there is raised on every process, as the same exception, instead of leaving the others
        waiting in the next collective."""
        if self.world == 1:
            return read()
        error = value = None
        if self.main:
            try:
                value = read()
            except Exception as err:  # re-raised below, on every process
                error = err
        sent = self.from_main((_portable(error), value if share else None) if self.main else None)
        if error is not None:
            raise error
        if sent[0] is not None:
            raise sent[0]
        return value if self.main else sent[1]


class FsdpSharding(Sharding):
    """FSDP2: parameters and optimizer state are DTensor shards. Trainable weights are gathered to the
    main process (torch's state-dict API, broadcast_from_rank0 on the way back); each process keeps
    its own shard of the optimizer state in a checkpoint of its own."""

    sharded_forward = True
    shards_optimizer = True

    def local_optimizer_state(self, model: nn.Module, optimizer: Any) -> dict[str, Any]:
        from torch.distributed.tensor import DTensor

        state = _inner(optimizer).state_dict()
        return {**state, "state": {index: {k: v.to_local() if isinstance(v, DTensor) else v for k, v in entry.items()}
                                   for index, entry in state["state"].items()}}

    def load_local_optimizer(self, model: nn.Module, optimizer: Any, state: dict[str, Any]) -> None:
        from torch.distributed.tensor import DTensor

        inner = _inner(optimizer)
        params = [p for group in inner.param_groups for p in group["params"]]
        restored = {}
        for index, entry in state["state"].items():
            param = params[int(index)]
            # moments have the parameter's local shape; the step counter stays a plain scalar tensor
            # (uneven shards: the global shape and stride must be given, from_local would guess them)
            restored[index] = {k: DTensor.from_local(v, param.device_mesh, param.placements, run_check=False,
                                                     shape=param.shape, stride=param.stride())
                               if isinstance(param, DTensor) and v.shape == param.to_local().shape and v.dim() else v
                               for k, v in entry.items()}
        inner.load_state_dict({**state, "state": restored})

    def trainable_tensors(self, model: nn.Module) -> dict[str, torch.Tensor]:
        from torch.distributed.tensor import DTensor

        _reshard(model)
        out = {}
        for name, param in model.named_parameters():
            if param.requires_grad:  # the same order on every process: full_tensor() is a collective
                whole = param.full_tensor() if isinstance(param, DTensor) else param
                if self.main:
                    out[name] = whole.detach().to("cpu")
        return out

    def load_tensors(self, model: nn.Module, saved: dict[str, torch.Tensor] | None) -> None:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        options = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True, strict=False)
        names = self.from_main(sorted(saved) if saved is not None else None)
        # Non-main processes pass the names with empty placeholders: only rank 0's values are broadcast.
        state = saved if self.main else {n: torch.empty(0) for n in names}
        set_model_state_dict(model, state, options=options)


class DeepSpeedSharding(Sharding):
    """DeepSpeed ZeRO owns the optimizer step (at the accumulation boundary the loop marks), gradient
    averaging and clipping, and each rank writes its own partition of the optimizer state. Stage 1/2
    keep parameters whole on every process; stage 3 partitions them too (every forward gathers them,
    as under FSDP2), and the trainable weights are gathered with `GatheredParameters`."""

    shards_optimizer = True

    def __init__(self, accelerator: Accelerator) -> None:
        super().__init__(accelerator)
        self.engine = accelerator.deepspeed_engine_wrapped.engine
        self.sharded_forward = lockstep(accelerator)

    def trainable_tensors(self, model: nn.Module) -> dict[str, torch.Tensor]:
        with self._whole(model):  # copied inside: stage 3 frees the gathered data on leaving
            return {n: p.detach().to("cpu").clone() for n, p in model.named_parameters()
                    if p.requires_grad} if self.main else {}

    def local_optimizer_state(self, model: nn.Module, optimizer: Any) -> dict[str, Any]:
        return _plain_zero_state(self.engine.optimizer.state_dict())

    def load_local_optimizer(self, model: nn.Module, optimizer: Any, state: dict[str, Any]) -> None:
        zero = self.engine.optimizer
        # the loss scaler (fp16's) is not saved (engine/sharding.py _plain_zero_state): this run's own
        state = {**state, "loss_scaler": zero.loss_scaler}
        slots: list[Any] = [None] * self.world  # DeepSpeed reads the slot of this rank only
        slots[self.accelerator.process_index] = state
        zero.load_state_dict(slots, load_optimizer_states=True, load_from_fp32_weights=True)

    def backward(self, loss: torch.Tensor, boundary: bool) -> None:
        # The loss is already normalised over the step's micro-batches (engine/loop.py): no division by
        # the accumulation count, and DeepSpeed reduces and steps only where the loop says.
        self.engine.set_gradient_accumulation_boundary(boundary)
        self.engine.backward(loss, scale_wrt_gas=False)

    def clip_and_step(self, model: nn.Module, optimizer: Any, max_norm: float,
                      check: Callable[[float], None]) -> float:
        self.engine.step()  # clips to gradient_clipping (train.max_grad_norm), updates, zeroes
        norm = self.engine.get_global_grad_norm()
        norm = float(norm) if norm is not None else 0.0
        check(norm)
        return norm

    @contextmanager
    def accumulating(self, model: nn.Module, boundary: bool) -> Iterator[None]:
        yield  # DeepSpeed holds the reduction until the boundary itself

    @contextmanager
    def building_plain(self) -> Iterator[None]:
        """transformers builds every model under `zero.Init` (partitioned, a collective) while ZeRO-3 is
        configured: the main process's own copy is built with it switched off."""
        from transformers.integrations import deepspeed as hf_deepspeed

        kept = hf_deepspeed._hf_deepspeed_config_weak_ref
        hf_deepspeed.unset_hf_deepspeed_config()
        try:
            yield
        finally:
            hf_deepspeed._hf_deepspeed_config_weak_ref = kept

    @contextmanager
    def _whole(self, model: nn.Module, modify: bool = False) -> Iterator[None]:
        """Stage 3: the trainable parameters gathered on every process for the block (rank 0's edits kept)."""
        if not self.sharded_forward:
            yield
            return
        import deepspeed

        params = [p for p in model.parameters() if p.requires_grad]
        with deepspeed.zero.GatheredParameters(params, modifier_rank=0 if modify else None):
            yield


def _reshard(model: nn.Module) -> None:
    """Register the sharded parameters again: after a forward pass without backward (evaluation), the
    root's gathered, plain tensors are still in place, and their storage is FSDP's to free."""
    from torch.distributed.fsdp import FSDPModule

    for module in model.modules():
        if isinstance(module, FSDPModule):
            module.reshard()


def _portable(error: BaseException | None) -> BaseException | None:
    """`error` as it can travel to the other processes (pickled), or its one line as a RuntimeError."""
    import pickle

    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:  # an exception that does not pickle: its type and message still tell what failed
        return RuntimeError(f"{type(error).__name__}: {error}")


def copy_tensors(model: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Copy `tensors` (parameters and buffers, by name) into `model`."""
    targets = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    with torch.no_grad():
        for name, tensor in tensors.items():
            targets[name].copy_(tensor)


def _inner(optimizer: Any) -> Any:
    """The torch optimizer under Accelerate's wrapper."""
    return getattr(optimizer, "optimizer", optimizer)


def _plain_zero_state(state: dict[str, Any]) -> dict[str, Any]:
    """A ZeRO optimizer state with DeepSpeed's own objects left out (the loss scaler of fp16,
    the stage enum, the universal-checkpoint slice map), so it loads with torch.load(weights_only=True)."""
    dropped = {"loss_scaler", "zero_stage", "param_slice_mappings"}
    return {k: v for k, v in state.items() if k not in dropped}


SHARDINGS: dict[DistributedType, Callable[[Accelerator], Sharding]] = {
    DistributedType.FSDP: FsdpSharding,
    DistributedType.DEEPSPEED: DeepSpeedSharding,
}


def lockstep(accelerator: Accelerator) -> bool:
    """True when parameters are sharded (FSDP2, ZeRO-3), so every forward pass is a collective: each
    process must run as many as the others (evaluation pads its shards, generation runs on every process)."""
    if accelerator.distributed_type == DistributedType.FSDP:
        return True
    plugin = accelerator.state.deepspeed_plugin if accelerator.distributed_type == DistributedType.DEEPSPEED else None
    return plugin is not None and int(plugin.zero_stage) == 3


def no_grad_for(model: nn.Module) -> Any:
    """torch.inference_mode, or no_grad for a model with sharded parameters (FSDP2, ZeRO-3): parameters
    gathered under inference mode would become inference tensors that the next training step cannot use."""
    from torch.distributed.fsdp import FSDPModule

    first = next(model.parameters(), None)
    sharded = hasattr(first, "ds_id") or any(isinstance(m, FSDPModule) for m in model.modules())
    return torch.no_grad() if sharded else torch.inference_mode()


def sharding_for(accelerator: Accelerator) -> Sharding:
    return SHARDINGS.get(accelerator.distributed_type, Sharding)(accelerator)
