"""The reward functions GRPO scores sampled answers with: built-ins for verifiable tasks, and your own.

Each reward maps (prompts, answers, the rows' other columns) to one float per answer; the objective
sums them with their weights. Built-ins (settings in config/schema.py, `RewardConfig`):

- `exact_match`: 1 when the answer (or what `extract` captures from it) equals the row's `column`;
- `regex`: 1 when the answer matches a pattern (a format: tags present, one word, a number last);
- `json_schema`: 1 for JSON valid against a schema, 0.5 for JSON that is not, 0 for no JSON;
- `length`: 1 inside a band of answer tokens, falling linearly to 0 one band-width outside;
- `function`: `fn(prompts, completions, **columns) -> list[float | None]`, the signature TRL's reward
  functions have, from a Python file. It runs your code, so it needs `objective.allow_code: true`,
  and the file's sha256 goes into the run record; None (not applicable) counts as 0.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tunelab.choices import Choices
from tunelab.errors import ConfigError, DataError, TrainingError

ColumnRows = list[dict[str, Any]]


class Reward:
    """One reward of a GRPO run: `score` gives one float per answer."""

    def __init__(self, settings: Any, label: str) -> None:
        self.settings, self.label, self.weight = settings, label, float(settings.weight)

    def score(self, prompts: list[str], answers: list[str], lengths: list[int], rows: ColumnRows) -> list[float]:
        raise NotImplementedError

    def columns(self) -> list[str]:
        """Data columns this reward reads (checked against the data before training)."""
        return []

    def record(self) -> dict[str, Any]:
        """What the run record keeps about this reward (its settings; a function's file hash)."""
        return {"label": self.label, **self.settings.model_dump(mode="json", by_alias=True)}


REWARDS: Choices[Callable[[Any, str], Reward]] = Choices("reward")


def _normal(text: str, ignore_case: bool) -> str:
    text = " ".join(str(text).split())
    return text.casefold() if ignore_case else text


@REWARDS.register("exact_match")
class ExactMatch(Reward):
    def columns(self) -> list[str]:
        return [self.settings.column]

    def score(self, prompts: list[str], answers: list[str], lengths: list[int], rows: ColumnRows) -> list[float]:
        pattern = re.compile(self.settings.extract) if self.settings.extract else None
        out = []
        for answer, row in zip(answers, rows, strict=True):
            if pattern is not None:
                found = pattern.search(answer)
                if found is None:
                    out.append(0.0)
                    continue
                answer = found.group(1) if found.groups() else found.group(0)
            same = _normal(answer, self.settings.ignore_case) == _normal(row[self.settings.column],
                                                                          self.settings.ignore_case)
            out.append(1.0 if same else 0.0)
        return out


@REWARDS.register("regex")
class Regex(Reward):
    def score(self, prompts: list[str], answers: list[str], lengths: list[int], rows: ColumnRows) -> list[float]:
        pattern = re.compile(self.settings.pattern, re.DOTALL)
        test = pattern.fullmatch if self.settings.full_match else pattern.search
        return [1.0 if test(answer.strip() if self.settings.full_match else answer) else 0.0 for answer in answers]


@REWARDS.register("json_schema")
class JsonSchema(Reward):
    def __init__(self, settings: Any, label: str) -> None:
        super().__init__(settings, label)
        import jsonschema  # only GRPO runs with this reward need it

        schema = settings.schema_
        if isinstance(schema, str):
            path = Path(schema)
            try:
                schema = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as err:
                raise ConfigError(f"objective.rewards: json_schema file {schema!r} cannot be read as JSON ({err})",
                                  fix="point schema at a .json file holding a JSON Schema") from None
        validator = jsonschema.validators.validator_for(schema)
        try:
            validator.check_schema(schema)
        except jsonschema.SchemaError as err:
            raise ConfigError(f"objective.rewards: the json_schema reward's schema is not a valid JSON Schema "
                              f"({err.message})", fix="fix the schema") from None
        self._validator = validator(schema)

    def score(self, prompts: list[str], answers: list[str], lengths: list[int], rows: ColumnRows) -> list[float]:
        out = []
        for answer in answers:
            try:
                value = json.loads(_json_part(answer))
            except ValueError:
                out.append(0.0)
                continue
            out.append(1.0 if self._validator.is_valid(value) else 0.5)
        return out


def _json_part(answer: str) -> str:
    """The answer without a Markdown code fence around it (```json ... ```), which models often add."""
    text = answer.strip()
    fenced = re.fullmatch(r"```(?:json)?\s*(.*?)\s*```", text, re.DOTALL)
    return fenced.group(1) if fenced else text


@REWARDS.register("length")
class Length(Reward):
    def score(self, prompts: list[str], answers: list[str], lengths: list[int], rows: ColumnRows) -> list[float]:
        low, high = self.settings.min_tokens, self.settings.max_tokens
        width = max(high - low, 1)
        return [1.0 if low <= n <= high else max(0.0, 1.0 - (low - n if n < low else n - high) / width)
                for n in lengths]


@REWARDS.register("function")
class Function(Reward):
    def __init__(self, settings: Any, label: str) -> None:
        super().__init__(settings, label)
        file, _, name = settings.path.rpartition(":")
        path = Path(file)
        if not path.is_file():
            raise ConfigError(f"objective.rewards: reward file {file!r} does not exist",
                              fix="give 'file.py:function_name' relative to where tunelab runs")
        code = path.read_bytes()
        self.sha256 = hashlib.sha256(code).hexdigest()
        spec = importlib.util.spec_from_file_location(f"tunelab_reward_{self.sha256[:12]}", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
        except Exception as err:  # noqa: BLE001 - the user's module: any error is theirs, reported in one line
            raise ConfigError(f"objective.rewards: importing {file} failed: {type(err).__name__}: {err}",
                              fix="fix the reward file (run it with python to see the traceback)") from None
        self.function = getattr(module, name, None)
        if not callable(self.function):
            raise ConfigError(f"objective.rewards: {file} has no function {name!r}",
                              fix=f"define def {name}(prompts, completions, **columns) -> list[float]")

    def record(self) -> dict[str, Any]:
        return {**super().record(), "sha256": self.sha256}

    def score(self, prompts: list[str], answers: list[str], lengths: list[int], rows: ColumnRows) -> list[float]:
        columns = {key: [row.get(key) for row in rows] for key in (rows[0] if rows else {})}
        values = self.function(prompts=prompts, completions=answers, **columns)
        if not isinstance(values, (list, tuple)) or len(values) != len(answers):
            got = f"{len(values)} values" if isinstance(values, (list, tuple)) else type(values).__name__
            raise TrainingError(f"reward {self.settings.path} returned {got} for {len(answers)} answers",
                                fix="return one float (or None) per completion")
        out = []
        for value in values:
            number = 0.0 if value is None else float(value)
            if not math.isfinite(number):
                raise TrainingError(f"reward {self.settings.path} returned {value!r}", fix="return finite floats")
            out.append(number)
        return out


def reward_labels(configs: list[Any]) -> list[str]:
    """Each reward's name in metrics: its kind, numbered when a kind repeats (regex, regex_2)."""
    labels, seen = [], {}
    for cfg in configs:
        seen[cfg.name] = seen.get(cfg.name, 0) + 1
        labels.append(cfg.name if seen[cfg.name] == 1 else f"{cfg.name}_{seen[cfg.name]}")
    return labels


def build_rewards(configs: list[Any]) -> list[Reward]:
    """The configured rewards, labelled as `reward_labels` names them."""
    return [REWARDS.get(cfg.name)(cfg, label) for cfg, label in zip(configs, reward_labels(configs), strict=True)]


def check_columns(rewards: list[Reward], row: dict[str, Any], where: str) -> None:
    """Refuse, before training, a reward that reads a column the data does not have."""
    for reward in rewards:
        for column in reward.columns():
            if column not in row:
                have = ", ".join(sorted(row)) or "none besides the prompt"
                raise DataError(f"{where}: the {reward.label} reward reads column {column!r}, which the rows do "
                                f"not have (other columns: {have})",
                                fix=f"set the reward's column to one of them, or add {column!r} to the data")
