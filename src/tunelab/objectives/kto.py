"""KTO (Ethayarajh et al., 2024): alignment from answers labelled desirable or undesirable, no pairs.

Each answer's implicit reward is its log-ratio to the starting model, r = log pi(y|x) - log ref(y|x).
KTO values it against a reference point z, an estimate of the policy's KL from the starting model:

    desirable:    loss = w_d * (1 - sigmoid(beta * (r - z)))
    undesirable:  loss = w_u * (1 - sigmoid(beta * (z - r)))
    z = max(0, mean over the batch of log pi(y'|x) - log ref(y'|x))      (no gradient)

where y' is a *mismatched* answer — another sample's — so z measures how far the policy drifted
overall rather than on the answers it is trained on (TRL's KTOTrainer does the same). The twins are
built once, after tokenizing: sample i is paired with the answer of the next sample on a seeded
random cycle, so no sample meets its own answer. A batch is its n samples followed by their n
twins, scored in one forward pass; the starting model's scores of both are computed once before
training (objectives/preference.py, `score_reference`), so no second model is held. z is averaged
over every process's share of a batch, so two processes compute what one does.

Validation computes z over the whole split, so its loss does not depend on the eval batch size, and
reports `reward_auc` (how well the reward separates desirable from undesirable answers: 0.5 for the
starting model, whose rewards are all 0) and `reward_margin` (mean desirable minus mean undesirable
reward, scaled by beta as TRL logs rewards).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from torch import nn

from tunelab.objectives.base import IGNORE, OBJECTIVES, Objective
from tunelab.objectives.preference import (
    ReferenceScorer,
    ScoreFn,
    StepStats,
    reference_columns,
    score_reference,
    sequence_logps,
)

if TYPE_CHECKING:
    import datasets

    from tunelab.config.schema import KtoObjective
    from tunelab.engine import Trainer
    from tunelab.tasks.base import PreparedData

TWIN = ("kl_input_ids", "kl_labels")  #: dataset columns of each sample's mismatched twin
REFERENCE = {"logp": "ref_logp", "kl_logp": "ref_kl_logp"}  #: scorer output -> dataset column


@OBJECTIVES.register("kto")
class KTO(Objective["KtoObjective"]):
    name = "kto"
    consumes = "next-token-logits"
    layout = "labelled"
    uses_reference = True
    own_metrics: ClassVar[dict[str, bool]] = {
        "loss": False, "reward_auc": True, "reward_margin": True, "desirable_logp": True, "undesirable_logp": False,
    }

    def __init__(self, task: Any, settings: KtoObjective) -> None:
        super().__init__(task, settings)
        self._stats = StepStats()
        self._sum_across = lambda value: value  # the trainer's, once it exists (before_training)

    # ---- before the first step --------------------------------------------------------------
    def before_training(self, trainer: Trainer) -> None:
        self._sum_across = trainer.sum_across
        score_reference(trainer, self)

    def with_reference(self, dataset: datasets.Dataset, score: ScoreFn, config: Any) -> datasets.Dataset:
        """The twins, then both sequences' scores under the starting model."""
        if TWIN[0] not in dataset.column_names:
            dataset = with_twins(dataset, config.train.seed, config.train.max_length)
        return reference_columns(dataset, ReferenceScorer(self, ("logp", "kl_logp")), REFERENCE, score)

    # ---- batches ----------------------------------------------------------------------------
    def collate(self, rows: dict[str, list[Any]]) -> dict[str, torch.Tensor]:
        batch = self.task.collate({"input_ids": rows["input_ids"] + rows[TWIN[0]],
                                   "labels": rows["labels"] + rows[TWIN[1]]})
        batch["desirable"] = torch.tensor(rows["desirable"], dtype=torch.bool)
        if REFERENCE["logp"] in rows:
            batch["ref_logps"] = torch.tensor(rows[REFERENCE["logp"]] + rows[REFERENCE["kl_logp"]],
                                              dtype=torch.float64)
        return batch

    def count_items(self, batch: dict[str, torch.Tensor]) -> int:
        return int(batch["desirable"].shape[0])

    def _scores(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        sums, counts = sequence_logps(self.task, model, batch)
        n = len(sums) // 2
        ref = batch.get("ref_logps")
        if ref is None:  # data the reference never scored (a file given to `tunelab eval` later)
            ref = torch.full_like(sums, float("nan"))
        return {"logp": sums[:n], "kl_logp": sums[n:], "ref_logp": ref[:n], "ref_kl_logp": ref[n:],
                "tokens": counts[:n], "desirable": batch["desirable"].to(sums.device)}

    def losses(self, s: dict[str, torch.Tensor], kl: torch.Tensor | float) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss, reward) per sample, [n] each, against the reference point `kl`; rewards carry no gradient."""
        beta, logratio = self.settings.beta, s["logp"] - s["ref_logp"]
        desirable = s["desirable"]
        losses = torch.where(desirable, self.settings.desirable_weight * (1 - torch.sigmoid(beta * (logratio - kl))),
                             self.settings.undesirable_weight * (1 - torch.sigmoid(beta * (kl - logratio))))
        return losses, beta * logratio.detach()

    # ---- training ---------------------------------------------------------------------------
    def loss_sum(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        s = self._scores(model, batch)
        drift = (s["kl_logp"] - s["ref_kl_logp"]).detach()
        # z over the whole global batch: each process holds a shard of it (see the module docstring)
        kl = max(self._sum_across(float(drift.sum())) / max(self._sum_across(float(drift.numel())), 1.0), 0.0)
        losses, rewards = self.losses(s, kl)
        mean_logp = (s["logp"] / s["tokens"]).detach()
        d = s["desirable"]
        self._stats.add({"kl": torch.tensor([kl]), "desirable_reward": rewards[d], "undesirable_reward": rewards[~d],
                         "desirable_logp": mean_logp[d], "undesirable_logp": mean_logp[~d]})
        return losses.sum()

    def pop_step_stats(self) -> dict[str, tuple[float, float]]:
        return self._stats.pop()

    # ---- evaluation -------------------------------------------------------------------------
    def eval_step(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
        s = self._scores(model, batch)
        out = {k: s[k] for k in ("logp", "kl_logp", "ref_logp", "ref_kl_logp", "tokens")}
        out["desirable"] = s["desirable"].double()
        return {k: v.detach().double().cpu().numpy() for k, v in out.items()}

    def compute_metrics(self, outputs: dict[str, np.ndarray], data: PreparedData) -> dict[str, Any]:
        if not outputs or not len(outputs["logp"]):
            return {name: float("nan") for name in self.own_metrics} | {"kl": float("nan"), "samples": 0}
        tensors = {k: torch.from_numpy(v) for k, v in outputs.items()}
        tensors["desirable"] = tensors["desirable"].bool()
        kl = max(float((tensors["kl_logp"] - tensors["ref_kl_logp"]).mean()), 0.0)
        losses, rewards = self.losses(tensors, kl)
        d = outputs["desirable"].astype(bool)
        reward, mean_logp = rewards.numpy(), outputs["logp"] / outputs["tokens"]
        return {
            "loss": float(losses.mean()),
            "reward_auc": _auc(d, reward),
            "reward_margin": _mean(reward[d]) - _mean(reward[~d]),
            "desirable_logp": _mean(mean_logp[d]),
            "undesirable_logp": _mean(mean_logp[~d]),
            "kl": kl,
            "samples": len(d),
        }

    def worst_samples(
        self, outputs: dict[str, np.ndarray], dataset: datasets.Dataset, data: PreparedData, k: int
    ) -> list[dict[str, Any]]:
        """The k answers the model values most wrongly: undesirable ones it rewards most, desirable
        ones it rewards least."""
        d = outputs["desirable"].astype(bool)
        reward = self.settings.beta * (outputs["logp"] - outputs["ref_logp"])
        signed = np.where(d, reward, -reward)
        rows = []
        for i in np.argsort(signed, kind="stable")[:k]:
            if not np.isfinite(signed[i]):
                continue
            row = dataset[int(i)]
            rows.append({"row": int(i), "desirable": bool(d[i]), "reward": float(reward[i]),
                         "text": self.task.tokenizer.decode(row["input_ids"])[:2000]})
        return rows


def with_twins(dataset: datasets.Dataset, seed: int, max_length: int) -> datasets.Dataset:
    """`dataset` with each sample's mismatched twin: its prompt followed by the answer of the sample
    after it on a seeded random cycle (so, with two or more samples, never its own answer)."""
    n = len(dataset)
    order = np.random.default_rng(seed).permutation(n)
    partner = np.empty(n, dtype=np.int64)
    partner[order] = np.roll(order, -1)
    ids, labels = dataset["input_ids"], dataset["labels"]
    twin_ids, twin_labels = [], []
    for i in range(n):
        prompt = _answer_start(labels[i])
        j = int(partner[i])
        start = _answer_start(labels[j])
        twin_ids.append((ids[i][:prompt] + ids[j][start:])[:max_length])
        twin_labels.append(([IGNORE] * prompt + labels[j][start:])[:max_length])
    return dataset.add_column(TWIN[0], twin_ids).add_column(TWIN[1], twin_labels)


def _answer_start(labels: list[int]) -> int:
    """Where a sample's answer begins: its first trained position."""
    return next((i for i, t in enumerate(labels) if t != IGNORE), len(labels))


def _auc(desirable: np.ndarray, reward: np.ndarray) -> float:
    if desirable.all() or not desirable.any() or not np.isfinite(reward).all():
        return float("nan")
    from sklearn.metrics import roc_auc_score  # scikit-learn stays out of start-up, as in task metrics

    return float(roc_auc_score(desirable, reward))


def _mean(values: np.ndarray) -> float:
    return float(values.mean()) if len(values) else float("nan")
