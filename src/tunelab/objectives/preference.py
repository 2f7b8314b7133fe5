"""What the preference objectives share: pairs scored in one forward pass (DPO, ORPO, SimPO), the
reference scored once and per-step statistics (those and KTO).

A batch of n pairs is collated as 2n sequences, the n chosen then the n rejected, each with its own
trained (answer) tokens; one forward pass gives every sequence's summed log-probability of its
answer. Each objective module turns those into per-pair losses and implicit rewards
(`PairObjective.pair_losses`); everything else lives here:

- the reference: objectives that measure the policy against the starting model (DPO) score every
  pair with it once, before the first step (`before_training`), with a PEFT model's adapters
  disabled — so no second copy of the model is ever held, for LoRA and full fine-tuning alike. The
  scores become two dataset columns that batches carry.
- the count: one loss term per pair, so the engine's normalisation averages over pairs.
- evaluation: per-pair outputs, and metrics every preference run reports whatever its loss —
  `preference_accuracy` (the chosen answer has the higher mean log-probability per token; needs no
  reference, so the base model has one too), `reward_accuracy` and `reward_margin` (of the
  objective's implicit reward), and the mean per-token log-probabilities of both answers.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tunelab.objectives.base import IGNORE, Objective, S, base_function

if TYPE_CHECKING:
    import datasets

    from tunelab.engine import Trainer
    from tunelab.tasks.base import PreparedData

log = logging.getLogger(__name__)
REFERENCE = ("ref_chosen_logp", "ref_rejected_logp")  #: dataset columns of the reference's scores
SPLITS = ("train", "validation", "test")


@dataclass
class PairScores:
    """Summed answer log-probabilities of n pairs (and their trained-token counts), [n] each."""

    chosen: torch.Tensor
    rejected: torch.Tensor
    chosen_tokens: torch.Tensor
    rejected_tokens: torch.Tensor
    ref_chosen: torch.Tensor | None = None  # the starting model's, when the objective uses a reference
    ref_rejected: torch.Tensor | None = None

    @property
    def chosen_mean(self) -> torch.Tensor:
        """Mean log-probability per answer token (what length-normalised objectives compare)."""
        return self.chosen / self.chosen_tokens

    @property
    def rejected_mean(self) -> torch.Tensor:
        return self.rejected / self.rejected_tokens


class PairObjective(Objective[S]):
    """Base of the objectives trained on preference pairs; subclasses implement `pair_losses`."""

    consumes = "next-token-logits"
    layout = "pairs"
    own_metrics: ClassVar[dict[str, bool]] = {
        "loss": False, "preference_accuracy": True, "reward_accuracy": True, "reward_margin": True,
        "chosen_logp": True, "rejected_logp": False,
    }

    def __init__(self, task: Any, settings: S) -> None:
        super().__init__(task, settings)
        self._stats = StepStats()

    def pair_losses(self, scores: PairScores) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(loss, chosen reward, rejected reward) per pair, [n] each; rewards carry no gradient."""
        raise NotImplementedError

    # ---- batches ----------------------------------------------------------------------------
    def collate(self, rows: dict[str, list[Any]]) -> dict[str, torch.Tensor]:
        batch = self.task.collate({"input_ids": rows["chosen_input_ids"] + rows["rejected_input_ids"],
                                   "labels": rows["chosen_labels"] + rows["rejected_labels"]})
        if self.uses_reference and REFERENCE[0] in rows:
            batch["ref_logps"] = torch.tensor(rows[REFERENCE[0]] + rows[REFERENCE[1]], dtype=torch.float64)
        return batch

    def count_items(self, batch: dict[str, torch.Tensor]) -> int:
        return batch["targets"].shape[0] // 2

    def scores(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> PairScores:
        """Every sequence's summed log-probability of its trained tokens, split into the two sides."""
        sums, counts = sequence_logps(self.task, model, batch)
        n = len(sums) // 2
        ref = batch.get("ref_logps")
        return PairScores(sums[:n], sums[n:], counts[:n], counts[n:],
                          None if ref is None else ref[:n], None if ref is None else ref[n:])

    # ---- training ---------------------------------------------------------------------------
    def loss_sum(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        scores = self.scores(model, batch)
        losses, chosen_reward, rejected_reward = self.pair_losses(scores)
        self._record(scores, chosen_reward, rejected_reward)
        return losses.sum()

    def _record(self, scores: PairScores, chosen: torch.Tensor, rejected: torch.Tensor) -> None:
        self._stats.add({"reward_margin": chosen - rejected, "reward_accuracy": (chosen > rejected).float(),
                         "chosen_reward": chosen, "rejected_reward": rejected,
                         "chosen_logp": scores.chosen_mean.detach(), "rejected_logp": scores.rejected_mean.detach()})

    def pop_step_stats(self) -> dict[str, tuple[float, float]]:
        return self._stats.pop()

    # ---- the reference ----------------------------------------------------------------------
    def before_training(self, trainer: Trainer) -> None:
        """Score every split's pairs with the starting model once (see the module docstring)."""
        if self.uses_reference:
            score_reference(trainer, self)

    def with_reference(self, dataset: datasets.Dataset, score: ScoreFn, config: Any) -> datasets.Dataset:
        if not self.uses_reference:
            return dataset
        sides = ("chosen", "rejected")
        return reference_columns(dataset, ReferenceScorer(self, sides), dict(zip(sides, REFERENCE, strict=True)),
                                 score)

    # ---- evaluation -------------------------------------------------------------------------
    def eval_step(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
        scores = self.scores(model, batch)
        if self.uses_reference and scores.ref_chosen is None:  # data the reference never scored
            nan = torch.full_like(scores.chosen, float("nan"))
            scores.ref_chosen, scores.ref_rejected = nan, nan
        losses, chosen_reward, rejected_reward = self.pair_losses(scores)
        out = {"loss": losses, "chosen_reward": chosen_reward, "rejected_reward": rejected_reward,
               "chosen_logp": scores.chosen_mean, "rejected_logp": scores.rejected_mean}
        return {k: v.detach().double().cpu().numpy() for k, v in out.items()}

    def compute_metrics(self, outputs: dict[str, np.ndarray], data: PreparedData) -> dict[str, Any]:
        if not outputs or not len(outputs["loss"]):
            return {name: float("nan") for name in self.own_metrics} | {"pairs": 0}
        chosen, rejected = outputs["chosen_reward"], outputs["rejected_reward"]
        return {
            "loss": float(outputs["loss"].mean()),
            "preference_accuracy": float((outputs["chosen_logp"] > outputs["rejected_logp"]).mean()),
            "reward_accuracy": float((chosen > rejected).mean()),
            "reward_margin": float((chosen - rejected).mean()),
            "chosen_reward": float(chosen.mean()),
            "rejected_reward": float(rejected.mean()),
            "chosen_logp": float(outputs["chosen_logp"].mean()),
            "rejected_logp": float(outputs["rejected_logp"].mean()),
            "pairs": len(chosen),
        }

    def worst_samples(
        self, outputs: dict[str, np.ndarray], dataset: datasets.Dataset, data: PreparedData, k: int
    ) -> list[dict[str, Any]]:
        """The k pairs the model prefers most wrongly (lowest reward margin), both answers decoded."""
        margin = outputs["chosen_reward"] - outputs["rejected_reward"]
        decode = self.task.tokenizer.decode
        rows = []
        for i in np.argsort(margin, kind="stable")[:k]:
            if not np.isfinite(margin[i]):
                continue
            row = dataset[int(i)]
            rows.append({"row": int(i), "reward_margin": float(margin[i]), "loss": float(outputs["loss"][i]),
                         "chosen": decode(row["chosen_input_ids"])[:2000],
                         "rejected": decode(row["rejected_input_ids"])[:2000]})
        return rows


class ReferenceScorer:
    """Scores the reference columns of objectives whose batches are two halves of n sequences each (a
    pair's chosen and rejected; a KTO sample and its twin): each half's summed log-probabilities under
    the keys `halves`, no loss."""

    def __init__(self, objective: Objective[Any], halves: tuple[str, str]) -> None:
        self.objective, self.halves = objective, halves

    def collate(self, rows: dict[str, list[Any]]) -> dict[str, torch.Tensor]:
        return self.objective.collate(rows)

    def eval_step(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
        sums, _ = sequence_logps(self.objective.task, model, batch)
        n = len(sums) // 2
        return {self.halves[0]: sums[:n].cpu().numpy(), self.halves[1]: sums[n:].cpu().numpy()}

    def compute_metrics(self, outputs: dict[str, np.ndarray], data: PreparedData) -> dict[str, Any]:
        return {}


def sigmoid_loss(logits: torch.Tensor, beta: float, label_smoothing: float) -> torch.Tensor:
    """-log sigmoid(beta * logits), with the conservative (label-smoothed) mix of the flipped label."""
    return (-F.logsigmoid(beta * logits) * (1 - label_smoothing) - F.logsigmoid(-beta * logits) * label_smoothing)


def token_logps(task: Any, model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """The log-probability of every trained token (row-major), and the row each belongs to."""
    logits, targets = task.loss_logits(model, batch)  # trained positions only, row-major
    rows = torch.nonzero(batch["targets"] != IGNORE)[:, 0]
    return -F.cross_entropy(logits, targets, reduction="none"), rows


def sequence_logps(task: Any, model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Every row's summed log-probability of its trained tokens, and how many there are ([rows] each).

    Sums and everything after them are float64: a margin is a small difference of two large sums
    (-50.1 vs -50.3), which float32 holds to ~5 digits; it costs nothing at a few values per batch.
    """
    logps, rows = token_logps(task, model, batch)
    logps = logps.double()
    size = batch["targets"].shape[0]
    sums = torch.zeros(size, dtype=logps.dtype, device=logps.device).index_add(0, rows, logps)
    return sums, torch.bincount(rows, minlength=size).to(logps.dtype)


class StepStats:
    """Per-step statistics of an objective (rewards, margins, log-probs) as name -> [sum, count].

    A stand-in row of an empty process shard (engine weight 0) is counted here too; it is rare (fewer
    rows than processes) and only touches these logged means, never the loss.
    """

    def __init__(self) -> None:
        self._totals: dict[str, list[float]] = {}

    def add(self, values: dict[str, torch.Tensor]) -> None:
        for name, value in values.items():
            total = self._totals.setdefault(name, [0.0, 0.0])
            total[0] += float(value.sum())
            total[1] += value.numel()

    def pop(self) -> dict[str, tuple[float, float]]:
        totals, self._totals = self._totals, {}
        return {name: (s, n) for name, (s, n) in totals.items()}


#: scores a dataset with some model and returns the per-row outputs: `score(dataset, scorer)`
ScoreFn = Callable[["datasets.Dataset", Any], dict[str, np.ndarray]]


def reference_columns(dataset: datasets.Dataset, scorer: Any, columns: dict[str, str],
                      score: ScoreFn) -> datasets.Dataset:
    """`dataset` with the starting model's scores as columns: `scorer`'s outputs (keys of `columns`)
    under the column names `columns` maps them to; `score` runs the starting model."""
    if all(c in dataset.column_names for c in columns.values()):
        return dataset
    out = score(dataset, scorer)
    for key, column in columns.items():
        dataset = dataset.add_column(column, out[key].tolist())
    return dataset


def score_reference(trainer: Trainer, objective: Objective[Any]) -> None:
    """Give every split the columns `objective.with_reference` adds, scored by the starting model.

    A PEFT model runs with its adapters disabled; a full fine-tune has not moved yet. So the reference
    costs one evaluation pass per split and no second copy of the model.
    """
    started, rows = time.perf_counter(), 0

    def score(dataset: datasets.Dataset, scorer: Any) -> dict[str, np.ndarray]:
        return trainer.evaluate(dataset, scorer=scorer, keep_outputs=True)[1]

    with base_function(trainer.unwrapped):
        for split in SPLITS:
            dataset = getattr(trainer.data, split)
            if dataset is None or not len(dataset):
                continue
            scored = objective.with_reference(dataset, score, trainer.config)
            if scored is not dataset:
                setattr(trainer.data, split, scored)
                rows += len(scored)
    seconds = time.perf_counter() - started
    log.info("reference: %d samples scored by the starting model in %.1f s (no second model is kept)", rows, seconds)
    if rows and trainer.run is not None and trainer.accelerator.is_main_process:
        trainer.run.update(reference={"samples": rows, "seconds": round(seconds, 3)})
