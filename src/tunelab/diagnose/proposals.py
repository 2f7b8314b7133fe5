"""The next experiment each kind of finding proposes, as dotted overrides of the run's own config.

Every proposal turns one of the knobs a person would turn first, sized from the run (its learning
rate, method, rank, depth, epochs), and says why. `validate_proposal` applies it to the run's
config.yaml exactly as `tunelab train CONFIG OVERRIDES...` would, so a proposal that is offered
always trains.
"""

from __future__ import annotations

import copy
import math

from tunelab.config.load import apply_overrides, validate, yaml_value
from tunelab.diagnose.finding import Proposal
from tunelab.diagnose.view import RunView
from tunelab.errors import ConfigError

RANKED = ("lora", "dora", "qlora", "loha", "lokr", "adalora")  # methods whose capacity is method.r
WHOLE = ("full", "freeze")  # methods that move the pretrained weights themselves


def value(number: float | int) -> str:
    """A number for an override, to 3 significant digits, as YAML reads it back (1e-05 stays a float)."""
    if isinstance(number, int) and not isinstance(number, bool):
        return str(number)
    return yaml_value(float(f"{number:.3g}"))


def lr(run: RunView) -> float:
    return float(run.setting("train.learning_rate", 5e-5))


def longer(run: RunView, factor: int = 2) -> list[str]:
    """Train `factor` times as long: max_steps when the run set it, else epochs."""
    steps = run.setting("train.max_steps")
    if steps:
        return [f"train.max_steps={int(steps) * factor}"]
    return [f"train.epochs={int(run.setting('train.epochs', 3)) * factor}"]


def calmer(run: RunView) -> Proposal:
    """Divergence: a tenth of the learning rate, with warmup and gradient clipping where missing."""
    overrides = [f"train.learning_rate={value(lr(run) / 10)}"]
    if not run.setting("train.warmup_steps") and not run.setting("train.warmup_ratio"):
        overrides.append("train.warmup_ratio=0.1")
    if run.setting("train.max_grad_norm") is None:
        overrides.append("train.max_grad_norm=1.0")
    return Proposal(overrides, f"the loss blew up at learning rate {value(lr(run))}: a tenth of it, warmed up and "
                               "clipped, keeps the updates in the range the model was pretrained in")


def stronger(run: RunView) -> Proposal:
    """Underfitting: more capacity or more updates, whichever the run held back."""
    overrides, why = [], []
    if run.method == "freeze" and run.setting("method.train_last") is not None:
        last = int(run.setting("method.train_last"))
        overrides.append(f"method.train_last={last + max(1, (run.layers or 4) // 4)}")
        why.append(f"only the last {last} block(s) trained")
    elif run.method == "freeze" and int(run.setting("method.layers", 0)) > 0:
        overrides.append(f"method.layers={int(run.setting('method.layers')) // 2}")
        why.append(f"{run.setting('method.layers')} layers were frozen")
    elif run.method in RANKED and int(run.setting("method.r", 8)) < 32:
        overrides.append(f"method.r={int(run.setting('method.r', 8)) * 2}")
        why.append(f"rank {run.setting('method.r')} may be too small")
    overrides.append(f"train.learning_rate={value(lr(run) * 3)}")
    overrides += longer(run)
    why.append(f"learning rate {value(lr(run))} and {describe_length(run)} moved the model little")
    return Proposal(overrides, "; ".join(why))


def restrained(run: RunView, small: bool) -> Proposal:
    """Overfitting: fewer trainable weights (freeze the lower half, or halve the rank) and early stopping."""
    overrides: list[str] = []
    layers = run.layers
    if run.method == "full":
        if layers and layers >= 2:
            overrides += ["method.name=freeze", f"method.layers={layers // 2}"]
        else:
            overrides += ["method.name=lora", "method.r=8"]
    elif run.method == "freeze" and layers and run.setting("method.train_last") is None:
        frozen = int(run.setting("method.layers", 0))
        if frozen < layers - 1:
            overrides.append(f"method.layers={min(layers - 1, frozen + max(1, layers // 4))}")
    elif run.method == "freeze" and run.setting("method.train_last"):
        overrides.append(f"method.train_last={int(run.setting('method.train_last')) - 1}")
    elif run.method in RANKED and int(run.setting("method.r", 8)) > 2:
        overrides.append(f"method.r={max(2, int(run.setting('method.r', 8)) // 2)}")
    if not run.setting("eval.early_stopping_patience"):
        overrides.append("eval.early_stopping_patience=2")
    if not overrides:
        overrides.append(f"train.weight_decay={value(max(0.1, 2 * float(run.setting('train.weight_decay', 0.01))))}")
    what = "a small training set is memorised" if small else "the model memorises the training set"
    return Proposal(overrides, f"{what}: fewer trainable weights generalise better, and early stopping keeps the "
                               "best evaluation instead of the last")


def gentler(run: RunView) -> Proposal:
    """Forgetting: a low-rank adapter instead of moving the weights, or a smaller step (plus replay for LMs)."""
    if run.method in WHOLE:
        return Proposal(["method.name=lora", "method.r=8", f"train.learning_rate={value(min(lr(run), 1e-4))}"],
                        f"a {run.method} fine-tune moved the pretrained weights; a rank-8 LoRA at a learning rate "
                        "of at most 1e-4 leaves them untouched and forgets far less")
    overrides = [f"train.learning_rate={value(lr(run) / 2)}"]
    if run.setting("objective.name") == "sft" and not run.setting("data.replay"):  # replay mixes general text in
        overrides.append("data.replay.fraction=0.1")
        return Proposal(overrides, "half the learning rate, and one replayed general sample in ten, keep the model "
                                   "closer to what it could do before")
    return Proposal(overrides, "half the learning rate keeps the adapted model closer to the starting one")


def longer_training(run: RunView) -> Proposal:
    return Proposal(longer(run), f"the validation score was still rising at the end of {describe_length(run)}")


def describe_length(run: RunView) -> str:
    steps = run.setting("train.max_steps")
    if steps:
        return f"{steps} steps"
    epochs = run.setting("train.epochs", 3)
    return f"{epochs} epoch{'s' if epochs != 1 else ''}"


def room(run: RunView, p95: int) -> Proposal | None:
    """Truncation: a max_length that holds 95% of the rows, within the model's positions."""
    limit = (run.model_config or {}).get("max_position_embeddings")
    target = 32 * math.ceil(p95 / 32)
    if isinstance(limit, int):
        target = min(target, limit)
    current = int(run.setting("train.max_length", 256))
    if target <= current:
        return None
    return Proposal([f"train.max_length={target}"], f"{target} tokens hold 95% of the training rows whole "
                                                    f"({current} cut the rest)")


def cross_entropy(run: RunView, setting: str) -> list[str] | None:
    """`objective.<setting>` for a run trained with cross-entropy (its config.yaml names the objective
    it trained with), else None."""
    if run.setting("objective.name") != "cross-entropy":
        return None
    return [f"objective.{setting}"]


def balanced(run: RunView, why: str) -> Proposal | None:
    overrides = cross_entropy(run, "class_weights=balanced")
    if overrides is None or run.setting("objective.class_weights", "none") == "balanced":
        return None
    return Proposal(overrides, why)


def validate_proposal(run: RunView, proposal: Proposal) -> str | None:
    """None when `proposal` applied to the run's config.yaml validates, else the one-line error."""
    raw = copy.deepcopy(run.run.config)
    try:
        apply_overrides(raw, proposal.overrides)
        validate(raw, source=f"{run.run.path.name}/config.yaml")
    except ConfigError as err:
        return str(err)
    return None
