"""`planner: openai`: an OpenAI-compatible chat endpoint proposes the next experiment as JSON.

The model sees the goal, the knobs, every step so far (overrides, metric, forgetting) and the
diagnosis of the best run, and answers `{"overrides": ["key=value", ...], "reason": "..."}`: overrides
of the base config. Its answer is checked as strictly as a person's would be: valid JSON of that
shape, every key a knob, every value within the knob's range or among its choices, not tried before,
a config that validates. Anything else falls back to the rules planner, and the step's reason (and
the log) says why, so a weak or unavailable model never stops the autopilot or widens what it may do.
Only the standard library speaks HTTP here; the key comes from `openai.api_key_env`, never the file.
"""

from __future__ import annotations

import json
import logging
import os
import re
import urllib.error
import urllib.request
from typing import Any

import yaml

from tunelab.autopilot.goal import LoadedGoal
from tunelab.autopilot.state import AutopilotState, Step, canonical
from tunelab.config.load import yaml_value

log = logging.getLogger(__name__)
TIMEOUT_S = 120
MAX_TOKENS = 300


def propose(loaded: LoadedGoal, state: AutopilotState, number: int, diagnosis: dict[str, Any] | None,
            ) -> tuple[Step | None, str | None]:
    """(the model's step, None), or (None, why it was not usable)."""
    settings = loaded.goal.openai
    assert settings is not None  # load_goal requires the section for planner: openai
    try:
        answer = _ask(settings, _messages(loaded, state, diagnosis))
    except (OSError, urllib.error.URLError, ValueError, KeyError) as err:
        return None, f"the endpoint did not answer: {err}"
    try:
        overrides, reason = _parse(answer)
    except ValueError as err:
        return None, f"the answer was not a proposal ({err}): {answer[:120]!r}"
    problem = check(loaded, state, overrides)
    if problem:
        return None, problem
    return Step(number, list(loaded.goal.overrides) + overrides, "planner",
                f"{settings.model}: {reason or 'no reason given'}"), None


def check(loaded: LoadedGoal, state: AutopilotState, overrides: list[str]) -> str | None:
    """Why these overrides may not run (a key that is no knob, a value outside it, tried, invalid), or None."""
    params = {p.key: p for p in loaded.knobs.params}
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or key not in params:
            return f"{item!r} is not one of the knobs ({', '.join(params)})"
        param, value = params[key], yaml.safe_load(text)
        if param.kind == "categorical" and value not in param.choices:
            return f"{item!r}: {key} may be one of {list(param.choices)}"
        if param.kind != "categorical" and (not isinstance(value, (int, float)) or isinstance(value, bool)
                                            or not param.low <= value <= param.high):
            return f"{item!r}: {key} must be a number in [{param.low:g}, {param.high:g}]"
    candidate = list(loaded.goal.overrides) + overrides
    if canonical(candidate) in state.tried():
        return f"{' '.join(overrides)} was tried already"
    if not loaded.validates(candidate):
        return f"{' '.join(overrides)} does not validate against the base config"
    return None


def _messages(loaded: LoadedGoal, state: AutopilotState, diagnosis: dict[str, Any] | None) -> list[dict[str, str]]:
    goal = loaded.goal
    knobs = {p.key: (list(p.choices) if p.kind == "categorical" else {"low": p.low, "high": p.high, "type": p.kind})
             for p in loaded.knobs.params}
    steps = [{"overrides": s.overrides, goal.target.metric: s.value, "forgetting": s.forgetting, "status": s.status}
             for s in state.steps]
    findings = [{"id": f["id"], "summary": f["summary"]} for f in (diagnosis or {}).get("findings", [])]
    system = ("You plan fine-tuning experiments. Answer with one JSON object and nothing else: "
              '{"overrides": ["dotted.key=value", ...], "reason": "one sentence"}. Use only the knobs given, '
              "values within their ranges or choices, and a combination not tried before.")
    user = json.dumps({"target": goal.target.describe(), "knobs": knobs, "tried": steps,
                       "diagnosis_of_best_run": findings}, default=str)
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def _ask(settings: Any, messages: list[dict[str, str]]) -> str:
    body = json.dumps({"model": settings.model, "messages": messages, "temperature": 0,
                       "max_tokens": MAX_TOKENS}).encode()
    headers = {"Content-Type": "application/json"}
    key = os.environ.get(settings.api_key_env) if settings.api_key_env else None
    if key:
        headers["Authorization"] = f"Bearer {key}"
    request = urllib.request.Request(settings.base_url.rstrip("/") + "/chat/completions", data=body, headers=headers)
    with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:  # noqa: S310 - the configured endpoint
        reply = json.loads(response.read().decode("utf-8"))
    return str(reply["choices"][0]["message"]["content"])


def _parse(answer: str) -> tuple[list[str], str]:
    found = re.search(r"\{.*\}", answer, flags=re.DOTALL)
    if not found:
        raise ValueError("no JSON object")
    data = json.loads(found.group(0))
    overrides = data.get("overrides") if isinstance(data, dict) else None
    if not isinstance(overrides, list) or not overrides or not all(isinstance(o, str) for o in overrides):
        raise ValueError('"overrides" must be a non-empty list of "key=value" strings')
    # normalise each value as YAML writes it back, so `3e-3` (a string to PyYAML) and 0.003 are one setting
    normal = []
    for item in overrides:
        key, sep, text = item.partition("=")
        normal.append(f"{key.strip()}={yaml_value(_value(text))}" if sep else item)
    return normal, str(data.get("reason") or "")[:300]


def _value(text: str) -> Any:
    value = yaml.safe_load(text)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value
