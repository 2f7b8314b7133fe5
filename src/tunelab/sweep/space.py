"""The search space of a sweep: parse `space.yaml`, validate it up front, and turn samples into overrides.

A space file maps dotted config keys to specs::

    train.learning_rate: {type: float, low: 1.0e-5, high: 1.0e-3, log: true}
    train.batch_size: {type: categorical, choices: [8, 16, 32]}
    method.train_last: {type: int, low: 0, high: 6, step: 2}

Samples are applied with the config loader's own dotted overrides (`tunelab.config.load`), so a
sampled value is validated exactly like `tunelab train CONFIG key=value` would validate it.
Categorical choices may be whole mappings (`method: {type: categorical, choices: [{name: full},
{name: lora, r: 8}]}`); Optuna then sees a readable label for each and the mapping is applied.
"""

from __future__ import annotations

import copy
import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from tunelab.choices import closest
from tunelab.config.load import apply_overrides, load_yaml_file, read_yaml, validate, yaml_value
from tunelab.errors import ConfigError

Kind = Literal["float", "int", "categorical"]
FIELDS: dict[str, tuple[str, ...]] = {
    "float": ("type", "low", "high", "log", "step"),
    "int": ("type", "low", "high", "log", "step"),
    "categorical": ("type", "choices"),
}
SCALARS = (str, int, float, bool, type(None))


@dataclass(frozen=True)
class Param:
    """One dimension of the space; `key` is the dotted config key it sets."""

    key: str
    kind: Kind
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] = ()
    labels: tuple[Any, ...] = ()  # what Optuna sees for each choice (the choice itself when it is a scalar)
    #: each choice is a mapping of dotted config keys to values, set together (preset grid points)
    bundle: bool = False

    def suggest(self, trial: Any) -> Any:
        """Ask an Optuna trial (or Ray's wrapper of one) for this parameter's value."""
        if self.kind == "float":
            return trial.suggest_float(self.key, self.low, self.high, log=self.log, step=self.step)
        if self.kind == "int":
            return trial.suggest_int(self.key, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_categorical(self.key, list(self.labels))

    def value(self, sampled: Any) -> Any:
        """The config value of a sampled value (a categorical label maps back to its choice)."""
        if self.kind == "categorical":
            return self.choices[self.labels.index(sampled)]
        return sampled

    def overrides(self, sampled: Any) -> list[str]:
        """The dotted overrides a sampled value sets (several for a bundle)."""
        value = self.value(sampled)
        if self.bundle:
            return [f"{key}={yaml_value(v)}" for key, v in value.items()]
        return [f"{self.key}={yaml_value(value)}"]

    def distribution(self) -> Any:
        """The Optuna distribution (to rebuild a study from records, e.g. for parameter importances)."""
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        if self.kind == "float":
            return FloatDistribution(self.low, self.high, log=self.log, step=self.step)
        if self.kind == "int":
            return IntDistribution(int(self.low), int(self.high), log=self.log, step=int(self.step or 1))
        return CategoricalDistribution(list(self.labels))

    def probes(self) -> list[Any]:
        """Sampled values that together exercise every bound/choice when checked against the config."""
        if self.kind == "categorical":
            return list(self.labels)
        cast = int if self.kind == "int" else float
        return [cast(self.low), cast(self.high)]


@dataclass
class SearchSpace:
    """The parameters of a sweep; `grid` means every combination is run once, in order (enqueued)."""

    params: list[Param]
    source: str  # the space file, or "preset <name>", for messages
    grid: bool = False
    notes: dict[str, Any] = field(default_factory=dict)  # what a preset wants recorded in sweep.json

    @property
    def keys(self) -> list[str]:
        return [p.key for p in self.params]

    def suggest(self, trial: Any) -> dict[str, Any]:
        """Sample every parameter from `trial`; define-by-run, so Optuna and Ray's OptunaSearch share it."""
        return {p.key: p.suggest(trial) for p in self.params}

    def overrides(self, sampled: dict[str, Any]) -> list[str]:
        by_key = {p.key: p for p in self.params}
        return [item for key, value in sampled.items() for item in by_key[key].overrides(value)]

    def distributions(self) -> dict[str, Any]:
        return {p.key: p.distribution() for p in self.params}

    def grid_points(self) -> list[dict[str, Any]]:
        """Every combination of the parameters' labels, in order (categorical parameters only)."""
        return [dict(zip(self.keys, combo)) for combo in itertools.product(*(p.labels for p in self.params))]

    def grid_size(self) -> int:
        return math.prod(len(p.labels) for p in self.params)


def load_space(path: Path) -> SearchSpace:
    """Read and validate a space file; every problem is one ConfigError naming the file and the key."""
    raw = load_yaml_file(path, "space file")
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f"{path}: a search space is a mapping of dotted config keys to specs",
                          fix="e.g. 'train.learning_rate: {type: float, low: 1.0e-5, high: 1.0e-3, log: true}'")
    return SearchSpace([parse_param(str(key), spec, path) for key, spec in raw.items()], source=str(path))


def parse_param(key: str, spec: Any, where: Path | str) -> Param:
    """One `key: spec` entry; a bare list is shorthand for a categorical spec."""
    def fail(problem: str, fix: str | None = None) -> ConfigError:
        return ConfigError(f"{where}: {key}: {problem}", fix=fix)

    if isinstance(spec, list):
        spec = {"type": "categorical", "choices": spec}
    if not isinstance(spec, dict):
        raise fail(f"expected a spec mapping, got {spec!r}", fix="e.g. {type: float, low: 0.0, high: 0.3}")
    kind = spec.get("type")
    if kind not in FIELDS:
        hint = closest(str(kind), list(FIELDS))
        raise fail(f"type {kind!r} is not float, int or categorical", fix=f"did you mean {hint!r}?" if hint else None)
    for name in spec:
        if name not in FIELDS[kind]:
            hint = closest(str(name), list(FIELDS[kind]))
            raise fail(f"unknown field {name!r} for type {kind}",
                       fix=f"did you mean {hint!r}?" if hint else f"valid fields: {', '.join(FIELDS[kind])}")
    if kind == "categorical":
        return _categorical(key, spec.get("choices"), fail)
    return _numeric(key, kind, spec, fail)


def _categorical(key: str, choices: Any, fail: Any) -> Param:
    if not isinstance(choices, list) or not choices:
        raise fail("categorical needs a non-empty 'choices' list", fix="e.g. choices: [8, 16, 32]")
    if all(isinstance(c, SCALARS) for c in choices):
        labels = list(choices)
    else:  # Optuna only stores scalars: mappings/lists are shown to it as their one-line YAML
        labels = [yaml_value(c) for c in choices]
    if len(set(map(repr, labels))) != len(labels):
        raise fail("'choices' holds the same value twice")
    return Param(key, "categorical", choices=tuple(choices), labels=tuple(labels))


def _numeric(key: str, kind: Kind, spec: dict[str, Any], fail: Any) -> Param:
    for bound in ("low", "high"):
        if bound not in spec:
            raise fail(f"missing {bound!r}", fix=f"{kind} specs need low and high")
        value = spec[bound]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise fail(f"{bound!r} must be a number, got {value!r}")
        if kind == "int" and value != int(value):
            raise fail(f"{bound!r} must be a whole number for type int, got {value!r}", fix="or use type: float")
    low, high, log, step = spec["low"], spec["high"], spec.get("log", False), spec.get("step")
    if low >= high:
        raise fail(f"low ({low}) must be below high ({high})")
    if not isinstance(log, bool):
        raise fail(f"'log' must be true or false, got {log!r}")
    if log and low <= 0:
        raise fail(f"a log scale needs low > 0 (got {low})")
    if step is not None:
        if isinstance(step, bool) or not isinstance(step, (int, float)) or step <= 0:
            raise fail(f"'step' must be a positive number, got {step!r}")
        if log:
            raise fail("'step' and 'log: true' cannot be combined", fix="drop one of them")
        if kind == "int" and step != int(step):
            raise fail(f"'step' must be a whole number for type int, got {step!r}")
    return Param(key, kind, low=low, high=high, log=log, step=step)


def check_space(space: SearchSpace, config_path: Path, overrides: list[str] | tuple[str, ...]) -> None:
    """Apply every bound and choice of every parameter to the config and validate it, so an unknown key
    (with the closest valid one) or an out-of-range value fails now, before any trial runs."""
    base = read_yaml(config_path)
    apply_overrides(base, overrides)
    for param in space.params:
        for probe in param.probes():
            raw = copy.deepcopy(base)
            apply_overrides(raw, param.overrides(probe))
            validate(raw, source=space.source)
