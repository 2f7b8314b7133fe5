"""GRPO (Shao et al., 2024): reinforcement learning with verifiable rewards, no value model.

Each step, for every prompt of the batch, the current policy samples a group of G answers
(`num_generations`); the rewards (objectives/rewards.py) score them; an answer's advantage is its
reward minus its group's mean, divided by the group's standard deviation (`scale_rewards: group`)
or not (`none`, as Dr. GRPO). Every answer token then carries PPO's clipped surrogate,

    loss_t = -min(ratio_t * A, clip(ratio_t, 1 - epsilon, 1 + epsilon_high) * A)
             + beta * (exp(ref_t - logp_t) - (ref_t - logp_t) - 1)        (k3 estimate of the KL)

with ratio_t = pi(token) / pi_sampling(token). With `num_iterations: 1` the sampling policy is the
current one (ratio 1, gradient A * grad log pi); with more, one batch of answers drives several
optimizer updates and the clip bounds how far they move. Token losses are averaged as TRL's
`loss_type`s do: `dapo` over every answer token of the step (all micro-batches and processes),
`grpo` within each answer then over answers, `dr_grpo` over answers x max_new_tokens.

The reference for beta > 0 is the starting model: a PEFT model with its adapters off, so no copy is
held; for a full (or frozen-layer) fine-tune, a frozen copy made before step 1, whose size is logged. Answers are sampled in `prepare_batch`,
before the engine counts the step's loss terms, with the model in eval mode (no dropout) and the
global RNG, so a resumed run continues the same stream. Validation samples one answer per prompt
(greedy by default) and reports the mean reward, each reward's mean and the answer length, for the
base model and the tuned one alike.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from torch import nn

from tunelab.objectives.base import IGNORE, OBJECTIVES, Objective, base_function
from tunelab.objectives.preference import StepStats, token_logps
from tunelab.objectives.rewards import Reward, build_rewards, check_columns, reward_labels

if TYPE_CHECKING:
    import datasets

    from tunelab.config.schema import GrpoObjective
    from tunelab.engine import Trainer
    from tunelab.tasks.base import PreparedData

log = logging.getLogger(__name__)
STD_EPS = 1e-4  # added to a group's standard deviation (TRL's constant)


@OBJECTIVES.register("grpo")
class GRPO(Objective["GrpoObjective"]):
    name = "grpo"
    consumes = "next-token-logits"
    layout = "prompts"
    default_metric = "reward"
    own_metrics: ClassVar[dict[str, bool]] = {"reward": True}

    def __init__(self, task: Any, settings: GrpoObjective) -> None:
        super().__init__(task, settings)
        self.rewards: list[Reward] = build_rewards(settings.rewards)
        self._stats = StepStats()
        #: the starting model, kept only for beta > 0 without an adapter to switch off (full, freeze)
        self._reference: nn.Module | None = None

    @classmethod
    def settings_metrics(cls, settings: Any) -> dict[str, bool]:
        """The total reward and each reward alone (eval.metric may pick one: reward_exact_match)."""
        return {"reward": True, **{f"reward_{label}": True for label in reward_labels(settings.rewards)}}

    @property
    def iterations(self) -> int:
        return self.settings.num_iterations

    # ---- before the first step --------------------------------------------------------------
    def before_training(self, trainer: Trainer) -> None:
        if self.settings.beta > 0 and not callable(getattr(trainer.unwrapped, "disable_adapter", None)):
            self._reference = frozen_copy(trainer.unwrapped)
        first = trainer.data.train[0]
        check_columns(self.rewards, json.loads(first["extra"]), trainer.config.data.train)
        if trainer.run is not None and trainer.accelerator.is_main_process:
            trainer.run.update(rewards=[r.record() for r in self.rewards])

    # ---- batches ----------------------------------------------------------------------------
    def collate(self, rows: dict[str, list[Any]]) -> dict[str, Any]:
        """Prompts left-padded for generation; their reward columns as a list of dicts."""
        pad = self.task.pad_id
        longest = max(len(ids) for ids in rows["input_ids"])
        ids = torch.full((len(rows["input_ids"]), longest), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, prompt in enumerate(rows["input_ids"]):
            ids[i, longest - len(prompt):] = torch.as_tensor(prompt)
            mask[i, longest - len(prompt):] = 1
        return {"prompt_ids": ids, "prompt_mask": mask, "extra": [json.loads(e) for e in rows["extra"]]}

    def prepare_batch(self, model: nn.Module, batch: dict[str, Any]) -> dict[str, Any]:
        """Sample the groups, score them, and build the training sequences with their advantages."""
        s, group = self.settings, self.settings.num_generations
        answers = self._sample(model, batch, group, s.temperature, s.top_p)
        prompts = [p for p in self._prompts(batch) for _ in range(group)]
        rows = [r for r in batch["extra"] for _ in range(group)]
        texts, lengths, stopped = self._decode(answers)
        per_reward = self._score(prompts, texts, lengths, rows)
        total = sum(r.weight * per_reward[r.label] for r in self.rewards)
        grouped = total.view(-1, group)
        centred = grouped - grouped.mean(1, keepdim=True)
        std = grouped.std(1, keepdim=True)
        advantages = (centred / (std + STD_EPS) if s.scale_rewards == "group" else centred).flatten()
        train = self._sequences(batch, answers, group)
        train["advantages"] = advantages.to(train["input_ids"].device)
        if s.num_iterations > 1:  # the sampling policy's token log-probs, for the ratio of later updates
            with torch.no_grad():
                train["old_logps"] = token_logps(self.task, model, train)[0].detach()
        if s.beta > 0:
            reference = self._reference if self._reference is not None else model
            with torch.no_grad(), base_function(reference):
                train["ref_logps"] = token_logps(self.task, reference, train)[0].detach()
        self._stats.add({"reward": total, "reward_std": std.flatten(), "completion_length": lengths.double(),
                         "stopped": stopped.double(), "zero_std_groups": (std.flatten() < 1e-8).double(),
                         **{f"reward_{label}": values for label, values in per_reward.items()}})
        return train

    def count_items(self, batch: dict[str, Any]) -> int:
        answers = int(batch["advantages"].shape[0])
        if self.settings.loss_type == "grpo":
            return answers
        if self.settings.loss_type == "dr_grpo":
            return answers * self.settings.max_new_tokens
        return int((batch["targets"] != IGNORE).sum())

    # ---- training ---------------------------------------------------------------------------
    def loss_sum(self, model: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        s = self.settings
        logp, rows = token_logps(self.task, model, batch)
        advantage = batch["advantages"][rows].to(logp.dtype)
        old = batch["old_logps"] if "old_logps" in batch else logp.detach()
        ratio = torch.exp(logp - old)
        high = s.epsilon_high if s.epsilon_high is not None else s.epsilon
        clipped = torch.clamp(ratio, 1 - s.epsilon, 1 + high)
        per_token = -torch.min(ratio * advantage, clipped * advantage)
        stats = {"clip_fraction": ((ratio - clipped).abs() > 0).double()}
        if s.beta > 0:
            delta = batch["ref_logps"] - logp
            kl = torch.exp(delta) - delta - 1
            per_token = per_token + s.beta * kl
            stats["kl"] = kl.detach().double()
        self._stats.add(stats)
        if s.loss_type == "grpo":  # each answer's mean token loss, summed over answers
            size = batch["advantages"].shape[0]
            sums = torch.zeros(size, dtype=per_token.dtype, device=per_token.device).index_add(0, rows, per_token)
            counts = torch.bincount(rows, minlength=size).clamp(min=1).to(per_token.dtype)
            return (sums / counts).sum()
        return per_token.sum()

    def pop_step_stats(self) -> dict[str, tuple[float, float]]:
        return self._stats.pop()

    # ---- evaluation -------------------------------------------------------------------------
    def eval_step(self, model: nn.Module, batch: dict[str, Any]) -> dict[str, np.ndarray]:
        answers = self._sample(model, batch, 1, self.settings.eval_temperature, self.settings.top_p)
        texts, lengths, stopped = self._decode(answers)
        per_reward = self._score(self._prompts(batch), texts, lengths, batch["extra"])
        total = sum(r.weight * per_reward[r.label] for r in self.rewards)
        out = {"reward": total.numpy(), "completion_length": lengths.double().numpy(),
               "stopped": stopped.double().numpy(), "answer": np.array(texts, dtype=object)}
        return out | {f"reward_{label}": values.numpy() for label, values in per_reward.items()}

    def compute_metrics(self, outputs: dict[str, np.ndarray], data: PreparedData) -> dict[str, Any]:
        if not outputs or not len(outputs["reward"]):
            return {"reward": float("nan"), "samples": 0}
        metrics = {key: float(np.mean(values)) for key, values in outputs.items() if key != "answer"}
        return metrics | {"reward_std": float(np.std(outputs["reward"])), "samples": len(outputs["reward"])}

    def worst_samples(
        self, outputs: dict[str, np.ndarray], dataset: datasets.Dataset, data: PreparedData, k: int
    ) -> list[dict[str, Any]]:
        """The k prompts whose answer scored lowest, with the answer and each reward."""
        order = np.argsort(outputs["reward"], kind="stable")[:k]
        decode = self.task.tokenizer.decode
        labels = [f"reward_{r.label}" for r in self.rewards]
        return [{"row": int(i), "reward": float(outputs["reward"][i]),
                 **{label: float(outputs[label][i]) for label in labels},
                 "prompt": decode(dataset[int(i)]["input_ids"])[:2000], "answer": str(outputs["answer"][i])[:2000]}
                for i in order]

    # ---- pieces -----------------------------------------------------------------------------
    def _sample(self, model: nn.Module, batch: dict[str, Any], n: int, temperature: float,
                top_p: float) -> list[list[int]]:
        """n answers per prompt (prompt-major), each cut after its first stop token (kept: the model
        learns to stop) or at max_new_tokens."""
        net = getattr(model, "module", model)  # generate on the model under a DDP wrapper
        stop_ids = self.task.stop_ids()
        sampling = temperature > 0
        kwargs: dict[str, Any] = {"do_sample": sampling, "max_new_tokens": self.settings.max_new_tokens,
                                  "num_return_sequences": n, "eos_token_id": stop_ids,
                                  "pad_token_id": self.task.pad_id}
        if sampling:  # plain temperature / nucleus sampling: no top-k cut a model's generation_config may set
            kwargs.update(temperature=temperature, top_p=top_p, top_k=0)
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        was_training = net.training
        net.eval()
        with torch.no_grad():
            out = net.generate(input_ids=batch["prompt_ids"], attention_mask=batch["prompt_mask"], use_cache=True,
                               **kwargs)
        net.train(was_training)
        new = out[:, batch["prompt_ids"].shape[1]:].tolist()
        answers = []
        for ids in new:
            end = next((j for j, t in enumerate(ids) if t in stop_ids), None)
            answers.append(ids[: end + 1] if end is not None else ids)
        return answers

    def _prompts(self, batch: dict[str, Any]) -> list[str]:
        decode = self.task.tokenizer.decode
        return [decode(ids[mask.bool()].tolist(), skip_special_tokens=True)
                for ids, mask in zip(batch["prompt_ids"], batch["prompt_mask"], strict=True)]

    def _decode(self, answers: list[list[int]]) -> tuple[list[str], torch.Tensor, torch.Tensor]:
        stop_ids = set(self.task.stop_ids())
        texts = [self.task.tokenizer.decode(ids, skip_special_tokens=True).strip() for ids in answers]
        lengths = torch.tensor([len(ids) for ids in answers])
        stopped = torch.tensor([bool(ids) and ids[-1] in stop_ids for ids in answers])
        return texts, lengths, stopped

    def _score(self, prompts: list[str], texts: list[str], lengths: torch.Tensor,
               rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        counts = lengths.tolist()
        return {r.label: torch.tensor(r.score(prompts, texts, counts, rows), dtype=torch.float64)
                for r in self.rewards}

    def _sequences(self, batch: dict[str, Any], answers: list[list[int]], group: int) -> dict[str, Any]:
        """Prompt + answer sequences, right-padded as training collates them; only answers trained."""
        ids, labels = [], []
        for i, answer in enumerate(answers):
            row = i // group
            prompt = batch["prompt_ids"][row][batch["prompt_mask"][row].bool()].tolist()
            ids.append(prompt + answer)
            labels.append([IGNORE] * len(prompt) + answer)
        device = batch["prompt_ids"].device
        return {k: v.to(device) for k, v in self.task.collate({"input_ids": ids, "labels": labels}).items()}



def frozen_copy(model: nn.Module) -> nn.Module:
    """A frozen copy of the starting model, for a KL to it when no adapter can be switched off. It costs
    one more copy of the weights (logged); with LoRA or DoRA none is needed."""
    import copy

    reference = copy.deepcopy(model).eval()
    for param in reference.parameters():
        param.requires_grad_(False)
    size = sum(p.numel() * p.element_size() for p in reference.parameters())
    log.info("objective.beta > 0 with a full fine-tune: a frozen copy of the starting model is the KL reference "
             "(%.1f MB more memory; LoRA or DoRA would need none)", size / 2**20)
    return reference
