"""Model cards: one Markdown page per registered version, built only from what was recorded.

Everything on the card comes from the run's lineage (inputs, config, environment), its evaluation
(eval.json) and the version's stage history, so the same records always give the same card: no
clock is read, and re-rendering after a promotion changes only what the promotion changed.
"""

from __future__ import annotations

from typing import Any

from tunelab.config import Config
from tunelab.report import display as fmt
from tunelab.workspace.orm import ModelVersion, Run, StageChange

SPLITS = ("validation", "test", "generation")
NOT_METRICS = {"step", "epoch", "split", "support", "samples", "tokens", "words"}
PACKAGES = ("torch", "transformers", "peft", "accelerate", "datasets")
TRAIN_KEYS = ("epochs", "max_steps", "batch_size", "gradient_accumulation_steps", "learning_rate", "scheduler",
              "warmup_ratio", "weight_decay", "max_length", "precision", "l2_sp")
MAX_LABELS = 50
MAX_ARTIFACTS = 20
DEFAULT_LIMITATION = (
    "Evaluated only on the held-out split(s) above, drawn from the same sources as the training data; "
    "how it performs on other data (other domains, time periods, languages or populations) is unknown."
)


def render_card(version: ModelVersion, run_folder_eval: dict[str, Any], config: Config, *,
                data: dict[str, Any] | None = None, check: dict[str, Any] | None = None) -> str:
    """The Markdown card of `version` (loaded in an open session); `data` and `check` are the run's
    data.json and data_check.json, if kept."""
    run = version.run
    evaluation = run_folder_eval or {}
    sections = [
        _header(version, config),
        _history(version.changes),
        _intended_use(config, evaluation, data or {}),
        _base_model(config),
        _method(config),
        _training_data(run, config, data or {}),
        _evaluation(evaluation),
        _retention(evaluation),
        _gates(evaluation.get("gates") if isinstance(evaluation.get("gates"), dict) else run.gates),
        _data_governance(run, check or {}),
        _promotion_checks(version.changes),
        _reproducibility(run),
        _artifacts(run),
        _limitations(evaluation),
    ]
    return "\n\n".join(section for section in sections if section) + "\n"


# ---- pieces -------------------------------------------------------------------------------------
def _header(version: ModelVersion, config: Config) -> str:
    run = version.run
    rows = [("Stage", f"**{version.stage}**"), ("Run", f"`{run.id}`"), ("Task", run.task),
            ("Base model", f"`{config.model.source}`"), ("Method", fmt.method(config.method.model_dump())),
            ("Registered", f"{version.created_at} by {version.created_by}")]
    return f"# {version.model.name} v{version.version}\n\n" + _table(("", ""), rows)


def _history(changes: list[StageChange]) -> str:
    rows = [(c.created_at, _change_text(c), "accepted" if c.passed else "**refused**", c.created_by,
             c.reason or "") for c in changes]
    return "## Stage history\n\n" + _table(("when", "change", "outcome", "by", "reason"), rows)


def _change_text(change: StageChange) -> str:
    if not change.from_stage:
        return f"registered as {change.to_stage}"
    return f"{change.from_stage} \u2192 {change.to_stage}"


def _intended_use(config: Config, evaluation: dict[str, Any], data: dict[str, Any]) -> str:
    lines = ["## Intended use", "", f"Task: **{config.task}**, as trained and evaluated on the data below."]
    labels = data.get("labels") or (evaluation.get("test") or {}).get("labels")
    if isinstance(labels, list) and labels:
        shown = ", ".join(f"`{label}`" for label in labels[:MAX_LABELS])
        more = f" and {len(labels) - MAX_LABELS} more" if len(labels) > MAX_LABELS else ""
        lines.append(f"Labels ({len(labels)}): {shown}{more}.")
    return "\n".join(lines)


def _base_model(config: Config) -> str:
    model = config.model
    extra = f" at revision `{model.revision}`" if model.revision else ""
    code = " (remote model code trusted)" if model.trust_remote_code else ""
    return f"## Base model\n\n`{model.source}`{extra}{code}"


def _method(config: Config) -> str:
    method = config.method.model_dump()
    rows = [(f"method.{key}", _value(value)) for key, value in method.items() if key != "name"]
    train = config.train.model_dump()
    rows += [(f"train.{key}", _value(train[key])) for key in TRAIN_KEYS if train.get(key) not in (None, 0, 0.0)]
    rows.append(("train.seed", _value(config.train.seed)))
    if config.objective is not None:
        objective = config.objective.model_dump()
        rows.append(("objective", objective.pop("name")))
        rows += [(f"objective.{key}", _value(value)) for key, value in objective.items() if value not in (None, 0, 0.0)]
    if config.data.replay is not None:
        rows.append(("data.replay", f"{config.data.replay.source}, fraction {config.data.replay.fraction:g}"))
    return f"## Method\n\n**{method['name']}**\n\n" + _table(("setting", "value"), rows)


def _training_data(run: Run, config: Config, data: dict[str, Any]) -> str:
    counts = data.get("rows") if isinstance(data.get("rows"), dict) else {}
    rows = []
    for item in run.inputs:
        version = item.dataset_version
        # `news@v1/train.jsonl` names the file inside the version; a plain path is shown as configured
        source = f"`{item.path}`" if not version or item.path.startswith(version.ref) else f"`{version.ref}`"
        known = counts.get(item.split, version.rows if version else None)
        rows.append((item.split, source, f"`{item.sha256[:12]}`", fmt.number(known)))
    if not rows:
        rows = [(split, f"`{path}`", "not recorded", fmt.number(counts.get(split)))
                for split, path in config.data.split_paths().items()]
    return "## Training data\n\n" + _table(("split", "data", "sha256", "rows"), rows)


def _evaluation(evaluation: dict[str, Any]) -> str:
    base = evaluation.get("base") if isinstance(evaluation.get("base"), dict) else {}
    gains = evaluation.get("gain") if isinstance(evaluation.get("gain"), dict) else {}
    trivial = base.get("kind") not in (None, "pretrained")
    label = f"baseline ({base.get('label') or 'majority class'})" if trivial else "base"
    rows = []
    for split in SPLITS:
        metrics = evaluation.get(split)
        if not isinstance(metrics, dict):
            continue
        for name, value in metrics.items():
            if fmt.is_number(value) and name not in NOT_METRICS:
                before = (base.get(split) or {}).get(name)
                gain = (gains.get(split) or {}).get(name)
                rows.append((split, name, fmt.number(value), fmt.number(before), fmt.signed(gain)))
    if not rows:
        return "## Evaluation\n\nNo evaluation metrics were recorded."
    note = f"\n\n{base['note']}" if base.get("note") else ""
    return "## Evaluation\n\n" + _table(("split", "metric", "tuned", label, "gain"), rows) + note


def _retention(evaluation: dict[str, Any]) -> str:
    sets = evaluation.get("retention")
    if not isinstance(sets, dict) or not sets:
        return "## Retention (forgetting)\n\nNo retention sets were measured, so forgetting of general ability " \
               "is unknown."
    rows = []
    for name, entry in sets.items():
        metric = entry.get("metric")
        gate = "" if entry.get("limit") is None else ("pass" if entry.get("passed") else "**fail**")
        rows.append((name, metric or fmt.DASH, fmt.number(_of(entry.get("before"), metric)),
                     fmt.number(_of(entry.get("after"), metric)), fmt.percent(entry.get("forgetting"), 2),
                     fmt.percent(entry.get("limit"), 2), gate))
    return "## Retention (forgetting)\n\n" + _table(
        ("set", "metric", "before", "after", "forgetting", "limit", "gate"), rows)


def _gates(gates: dict[str, Any] | None) -> str:
    if not gates:
        return "## Evaluation gates\n\nNo evaluation gates were configured for the run."
    lines = [f"## Evaluation gates\n\nOverall: **{'passed' if gates.get('passed') else 'failed'}**\n"]
    lines += [f"- {_mark(c.get('passed'))} {c.get('message') or c.get('name')}" for c in gates.get("checks") or []]
    return "\n".join(lines)


def _data_governance(run: Run, report: dict[str, Any]) -> str:
    check = {True: "passed", False: "**failed**", None: "not recorded"}[run.data_check_passed]
    pii = "not scanned" if run.pii_count is None else (
        "none found" if run.pii_count == 0 else f"**{run.pii_count} findings**")
    lines = [f"## Data check and PII\n\n- Data check: {check}", f"- PII in the training data: {pii}"]
    by_entity = (report.get("pii") or {}).get("by_entity") or {}
    if by_entity:
        lines[-1] += " (" + ", ".join(f"{kind} {count}" for kind, count in sorted(by_entity.items())) + ")"
    if report.get("redacted"):
        lines += [f"- Redacted before training: {r['from']} → {r['to']} ({r['replacements']} values)"
                  for r in report["redacted"]]
    lines += [f"- Error: {_cell(e)}" for e in report.get("errors") or []]
    lines += [f"- Warning: {_cell(w)}" for w in report.get("warnings") or []]
    return "\n".join(lines)


def _promotion_checks(changes: list[StageChange]) -> str:
    """The checks of the latest accepted promotion (what let the version into its stage)."""
    accepted = [c for c in changes if c.passed and c.checks]
    if not accepted:
        return ""
    last = accepted[-1]
    lines = [f"## Promotion checks\n\n{_change_text(last)} on {last.created_at}:\n"]
    lines += [f"- {_mark(c.get('passed'))} {c.get('message')}" for c in last.checks]
    return "\n".join(lines)


def _reproducibility(run: Run) -> str:
    env = run.environment or {}
    packages = env.get("packages") if isinstance(env.get("packages"), dict) else {}
    versions = ", ".join(f"{name} {packages[name]}" for name in PACKAGES if packages.get(name)) or fmt.DASH
    rows = [("config sha256", f"`{run.config_sha256}`"), ("tunelab", run.tunelab_version),
            ("git commit", f"`{run.git_commit}`" if run.git_commit else "not recorded"), ("seed", str(run.seed)),
            ("python", str(env.get("python") or fmt.DASH)), ("packages", versions),
            ("hardware", _hardware(env)), ("started", run.started_at), ("ended", run.ended_at or fmt.DASH)]
    if run.reproduces:
        rows.append(("reproduces", f"`{run.reproduces}`"))
    return ("## Reproducibility\n\n" + _table(("", ""), rows)
            + f"\n\nRetrain with the recorded config: `tunelab train {run.path}/config.yaml`.")


def _hardware(env: dict[str, Any]) -> str:
    parts = [str(env[key]) for key in ("platform", "machine") if env.get(key)]
    if env.get("cpu_count"):
        parts.append(f"{env['cpu_count']} CPUs")
    parts.append(", ".join(env["gpus"]) if env.get("gpus") else "no GPU")
    if env.get("memory_gb"):
        parts.append(f"{env['memory_gb']} GB RAM")
    return "; ".join(parts)


def _artifacts(run: Run) -> str:
    if not run.artifacts:
        return ""
    rows = [(f"`{a.path}`", f"`{a.sha256[:12]}`", fmt.number(a.bytes)) for a in run.artifacts[:MAX_ARTIFACTS]]
    more = len(run.artifacts) - MAX_ARTIFACTS
    tail = f"\n\n... and {more} more files." if more > 0 else ""
    return "## Artifacts\n\n" + _table(("file", "sha256", "bytes"), rows) + tail


def _limitations(evaluation: dict[str, Any]) -> str:
    warnings = [str(w) for w in evaluation.get("warnings") or []]
    return "## Limitations\n\n" + "\n".join(f"- {_cell(w)}" for w in [*warnings, DEFAULT_LIMITATION])


# ---- Markdown helpers ---------------------------------------------------------------------------
def _table(header: tuple[str, ...], rows: list[tuple[Any, ...]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_cell(value) for value in row) + " |" for row in rows]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    return " ".join(str(value).split()).replace("|", "\\|")


def _value(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def _of(metrics: Any, name: str | None) -> Any:
    return metrics.get(name) if isinstance(metrics, dict) and name else metrics


def _mark(passed: Any) -> str:
    return "\u2713" if passed else "\u2717"
