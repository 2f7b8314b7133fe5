"""Built-in sweeps that need no space file.

`layers` answers "which layers should I train?": a grid of `freeze` with train_last 0..N (N = the
model's transformer blocks) and `lora` with r 4/8/16, and a recommendation: the configuration with
the fewest trainable parameters whose metric is within a tolerance of the best.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from tunelab.choices import Choices
from tunelab.config import Config
from tunelab.errors import ConfigError
from tunelab.methods.freeze import find_blocks
from tunelab.models import resolve_model
from tunelab.sweep.space import Param, SearchSpace
from tunelab.sweep.trial import COMPLETE, TrialRecord

PRESETS: Choices[Callable[[Config], SearchSpace]] = Choices("sweep preset")
LORA_RANKS = (4, 8, 16)
# LoRA trains far fewer weights from a zero start and wants a higher rate than full fine-tuning
# (the usual ranges: 1e-5..5e-5 full, 1e-4..1e-3 LoRA); at the same rate it would look much worse.
LORA_LR_FACTOR = 10
LAYER_COUNT_KEYS = ("num_hidden_layers", "n_layer", "num_layers")


@PRESETS.register("layers")
def layers_space(config: Config) -> SearchSpace:
    """One categorical `method` parameter whose choices are bundles of overrides: switching method.name
    changes the config's discriminated union, so each grid point replaces the whole `method` section;
    LoRA points also train at LORA_LR_FACTOR x train.learning_rate."""
    blocks = count_blocks(config)
    lora_lr = config.train.learning_rate * LORA_LR_FACTOR
    points = [({"method": {"name": "freeze", "train_last": n}}, f"last {n}") for n in range(blocks + 1)]
    points += [({"method": {"name": "lora", "r": r}, "train.learning_rate": lora_lr}, f"lora r{r} (lr {lora_lr:.0e})")
               for r in LORA_RANKS]
    param = Param("method", "categorical", choices=tuple(p for p, _ in points),
                  labels=tuple(label for _, label in points), bundle=True)
    return SearchSpace([param], source="preset layers", grid=True, notes={"preset": "layers", "blocks": blocks})


def count_blocks(config: Config) -> int:
    """The model's transformer blocks: config.json's layer count when it has one, else build the model
    once and count what `method: freeze` would count."""
    resolved = resolve_model(config.model)
    found = _layers_from_config_json(resolved.path / "config.json")
    if found:
        return found
    try:
        from transformers import AutoModel

        return len(find_blocks(AutoModel.from_pretrained(resolved.path)))
    except Exception:  # noqa: BLE001 - any failure to build it means: cannot count, say so in one line
        raise ConfigError(f"the layers preset cannot count the blocks of {config.model.source}",
                          fix="sweep method.train_last with a --space file instead") from None


def _layers_from_config_json(path: Any) -> int | None:
    if not path.is_file():
        return None
    info = json.loads(path.read_text())
    for section in (info, info.get("text_config") or {}):
        for key in LAYER_COUNT_KEYS:
            if isinstance(section.get(key), int) and section[key] > 0:
                return section[key]
    return None


def recommend(records: list[TrialRecord], greater_is_better: bool, tolerance: float) -> dict[str, Any] | None:
    """The finished point with the fewest trainable parameters within `tolerance` (absolute) of the best."""
    done = [r for r in records if r.state == COMPLETE and r.value is not None and r.trainable_params is not None]
    if not done:
        return None
    sign = 1 if greater_is_better else -1
    best = max(done, key=lambda r: sign * r.value)
    close = [r for r in done if abs(r.value - best.value) <= tolerance]
    pick = min(close, key=lambda r: (r.trainable_params, -sign * r.value))
    return {
        "label": point_label(pick), "number": pick.number, "value": pick.value,
        "trainable_params": pick.trainable_params, "run": pick.run, "tolerance": tolerance,
        "best": {"label": point_label(best), "number": best.number, "value": best.value,
                 "trainable_params": best.trainable_params},
    }


def point_label(record: TrialRecord) -> str:
    """How a trial is named in plots and tables: its preset label, else its params."""
    if set(record.params) == {"method"}:
        return str(record.params["method"])
    return ", ".join(f"{k}={v}" for k, v in record.params.items())


def describe_recommendation(rec: dict[str, Any], metric: str) -> str:
    best = rec["best"]
    return (f"{rec['label']}: {metric} {rec['value']:.4f} with {rec['trainable_params']:,} trainable parameters, "
            f"within {rec['tolerance']} of the best ({best['label']}: {best['value']:.4f} with "
            f"{best['trainable_params']:,})")
