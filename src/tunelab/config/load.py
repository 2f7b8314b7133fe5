"""Read a YAML config, apply dotted overrides, validate, and explain errors in one line."""

from __future__ import annotations

import logging
import math
import re
import types
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from tunelab.choices import closest
from tunelab.config.schema import Config
from tunelab.errors import ConfigError

log = logging.getLogger(__name__)


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Load `path`, apply `section.key=value` overrides and return the validated config."""
    path = Path(path)
    raw = read_yaml(path)
    apply_overrides(raw, overrides)
    config = validate(raw, source=str(path))
    if config.output.name is None:
        config.output.name = plain_name(path.stem)
    return config


def plain_name(text: str) -> str:
    """A run name made from a file name: anything outside the allowed characters becomes '-'."""
    name = re.sub(r"[^A-Za-z0-9._+=-]+", "-", text).replace("..", "-").strip("-.")[:100]
    return name or "run"


def load_config_text(text: str, overrides: list[str] | tuple[str, ...] = (), *, source: str = "submitted config",
                     name: str = "job") -> Config:
    """Like load_config for a config given as text (a server job): errors name `source`, never a file."""
    raw = parse_yaml_text(text, source)
    if raw is None:
        raise ConfigError(f"{source} is empty", fix="see `tunelab config schema` or examples/ for a config")
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of sections (task, model, data, ...)")
    apply_overrides(raw, overrides)
    config = validate(raw, source=source)
    if config.output.name is None:
        config.output.name = name
    return config


def read_yaml(path: Path) -> dict[str, Any]:
    """A config file as a dict; every problem is one ConfigError naming the file (and line)."""
    raw = load_yaml_file(path, "config file")
    if raw is None:
        raise ConfigError(f"{path} is empty", fix="see `tunelab config schema` or examples/ for a config")
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections (task, model, data, ...)")
    return raw


def load_yaml_file(path: Path, what: str) -> Any:
    """Parse a YAML file the user gave (`what` names it in errors: config file, space file)."""
    if not path.is_file():
        raise ConfigError(f"{what} {path} does not exist", fix="check the path")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not UTF-8 text", fix=f"save the {what} as UTF-8") from None
    return parse_yaml_text(text, str(path))


def parse_yaml_text(text: str, where: str) -> Any:
    """YAML text → value; a syntax error is one ConfigError naming `where` and the line."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f"{where}:{mark.line + 1}" if mark else where
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{at}: invalid YAML ({problem})", fix="fix the indentation or quoting there") from None


def yaml_value(value: Any) -> str:
    """`value` as one line of YAML that `apply_override` parses back to the same value (1e-05 stays a float)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=math.inf, allow_unicode=True).strip()
    return text.removesuffix("...").strip()


def apply_overrides(raw: dict[str, Any], items: list[str] | tuple[str, ...]) -> None:
    """Apply dotted overrides in order, except that choosing a section's kind (`method.name=lora`)
    comes first and starts that section over: the old kind's settings do not belong to the new one,
    and `method.r=8 method.name=lora` means a rank-8 LoRA whichever way round it is written."""
    for item in sorted(items, key=lambda i: not i.partition("=")[0].strip().endswith(".name")):
        apply_override(raw, item)


def apply_override(raw: dict[str, Any], item: str) -> None:
    """Set `a.b.c=value` in the nested dict; the value is parsed as YAML (3e-5, true, [a, b])."""
    key, sep, text = item.partition("=")
    if not sep or not key:
        raise ConfigError(f"override {item!r} is not of the form section.key=value", fix="e.g. train.learning_rate=3e-5")
    node = raw
    parts = key.strip().split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:  # an absent section, or one left at its default (`objective: null`)
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"override {item!r}: {part!r} is a value, not a section")
        node = child
    value = yaml.safe_load(text) if text.strip() else None
    if parts[-1] == "name" and len(parts) > 1 and "name" in node and node["name"] != value:
        node.clear()  # a new kind of method/objective: the old kind's settings are not its settings
    node[parts[-1]] = value


#: top-level sections renamed in this release: old name -> new name (the old one still works, with a warning)
RENAMED_SECTIONS = {"tokens": "token_classification"}


def validate(raw: dict[str, Any], source: str = "config") -> Config:
    raw = renamed_sections(raw, source)
    try:
        return Config.model_validate(raw)
    except ValidationError as err:
        problems = [describe(e) for e in err.errors()]
        raise ConfigError(f"{source}: " + "; ".join(problems)) from None


def renamed_sections(raw: dict[str, Any], source: str) -> dict[str, Any]:
    """`raw` with renamed sections under their new names; warns once per old name it finds."""
    if not any(old in raw for old in RENAMED_SECTIONS):
        return raw
    raw = dict(raw)
    for old, new in RENAMED_SECTIONS.items():
        if old not in raw:
            continue
        if new in raw:
            raise ConfigError(f"{source}: both {old!r} and {new!r} are given; {old!r} is the old name of {new!r}",
                              fix=f"keep only {new!r}")
        raw[new] = raw.pop(old)
        log.warning("%s: the %r section is now called %r; the old name will stop working in the next release",
                    source, old, new)
    return raw


def describe(error: dict[str, Any]) -> str:
    """One clause for one pydantic error: the dotted key path, what is wrong and the fix."""
    loc = error["loc"]
    kind = error["type"]
    path, model = _walk(loc)
    key = ".".join(path) or "(top level)"
    if kind == "extra_forbidden":
        valid = list(model.model_fields) if model else []
        hint = closest(str(loc[-1]), valid)
        fix = f"did you mean {'.'.join(path[:-1] + [hint])!r}?" if hint else f"valid keys: {', '.join(valid)}"
        return f"unknown key {key!r} ({fix})"
    if kind == "missing":
        return f"missing required key {key!r}"
    if kind == "union_tag_invalid":
        tags = error.get("ctx", {}).get("expected_tags", "")
        given = str(error.get("ctx", {}).get("tag", ""))
        options = [t.strip().strip("'") for t in str(tags).split(",")]
        hint = closest(given, options)
        fix = f"did you mean {hint!r}?" if hint else f"choose one of {tags}"
        return f"{key}.name: {given!r} is not a known value ({fix})"
    if kind == "union_tag_not_found":
        options = ", ".join(_tag(m) for m in _model_members(model.model_fields[path[-1]].annotation)) if model else ""
        return f"{key}.name is missing (the {key} these settings belong to: {options})"
    message = error["msg"]
    if kind == "value_error":  # our own validators say what they got
        return f"{key}: {message.removeprefix('Value error, ')}"
    value = error.get("input")
    shown = "" if isinstance(value, dict) else f" (got {short_repr(value)})"
    return f"{key}: {message[0].lower() + message[1:]}{shown}"


def short_repr(value: Any, limit: int = 80) -> str:
    """repr() cut to `limit` characters: an error message never echoes a whole oversized input."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


def _walk(loc: tuple[Any, ...]) -> tuple[list[str], type[BaseModel] | None]:
    """Turn a pydantic error location into the user's dotted key path, and the model owning its last key.

    Discriminated unions add the tag to the location (method -> lora -> r); it is not part of
    the user's key path, so it is dropped while following the path through the config models.
    """
    model: type[BaseModel] | None = Config
    parent: type[BaseModel] | None = Config
    path: list[str] = []
    pending_union: list[type[BaseModel]] = []
    for part in loc:
        if isinstance(part, int):  # a list index (objective.rewards.0): in the path; the item's model follows
            path.append(str(part))
            continue
        if pending_union:
            match = [m for m in pending_union if _tag(m) == part]
            pending_union = []
            if match:
                model = match[0]
                continue
        path.append(str(part))
        parent = model
        field = model.model_fields.get(str(part)) if model else None
        model = None
        if field is not None:
            members = _model_members(field.annotation)
            if len(members) == 1:
                model = members[0]
            elif members:
                pending_union = members
    return path, parent


def _model_members(annotation: Any) -> list[type[BaseModel]]:
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _model_members(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType, list, tuple):
        return [m for a in typing.get_args(annotation) for m in _model_members(a)]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return []


def _tag(model: type[BaseModel]) -> Any:
    field = model.model_fields.get("name")
    return field.default if field else None


def dump_config(config: Config) -> str:
    """The resolved config as YAML, every default written out."""
    data = config.model_dump(mode="json", by_alias=True)  # a json_schema reward's `schema` is an alias
    if data["train"].get("label_smoothing") is None:  # deprecated key, moved to objective
        data["train"].pop("label_smoothing", None)
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def config_schema() -> dict[str, Any]:
    return Config.model_json_schema()
