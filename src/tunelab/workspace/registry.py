"""The model registry: named, numbered versions of succeeded runs, moved through stages behind gates.

A version is a pointer to one recorded run (its lineage is the run's), a stage and a model card:

    candidate -> staging -> production     gated (candidate -> production directly: allowed, same gate)
    archived  -> staging | production      gated (a rollback is a promotion like any other)
    candidate | staging | production -> archived      not gated (taking a model out of use is always allowed)

Staging is a place to soak a model, not an extra gate, so skipping it is allowed. Nothing moves back
to candidate, and production never moves to staging (archive it instead). Promoting a version to
production archives the version that was there, so a name has at most one production version.

The policy is the run's own `governance.promotion` (from the config recorded with the run) unless
the caller passes another one. Every attempt, passed or refused, is a StageChange row plus an audit
entry in the same transaction; a refusal changes nothing else (the card is re-rendered so its history
shows the attempt). Registration is recorded as the version's first StageChange (from "" to
candidate, the note as its reason), so the history starts where the version does. Version numbers
are never reused: a deleted version's number stays taken.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session, object_session

from tunelab.choices import closest
from tunelab.config import Config, validate
from tunelab.config.load import load_yaml_file
from tunelab.config.schema import PromotionPolicy
from tunelab.errors import ConfigError, TunelabError
from tunelab.runs.folder import atomic_write_text, now_iso, read_json_object
from tunelab.workspace.audit import current_actor
from tunelab.workspace.card import render_card
from tunelab.workspace.orm import AuditEntry, ModelVersion, RegisteredModel, Run, StageChange
from tunelab.workspace.verify import integrity_check, run_findings
from tunelab.workspace.workspace import Txn, Workspace

STAGES = ("candidate", "staging", "production", "archived")
GATED = ("staging", "production")
# target stage -> the stages a version may come from
ALLOWED_FROM: dict[str, tuple[str, ...]] = {
    "staging": ("candidate", "archived"),
    "production": ("candidate", "staging", "archived"),
    "archived": ("candidate", "staging", "production"),
}
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
REGISTERED = ""  # from_stage of the StageChange that records the registration
CARD_NAME = "MODEL_CARD.md"
REF_FORMS = "NAME@vN, NAME@N, NAME@latest or NAME@<stage> (candidate, staging, production, archived)"


class RegistryError(TunelabError):
    """A registry request that cannot be carried out (unknown name, wrong stage, duplicate, ...)."""


@dataclass
class PromotionResult:
    """The outcome of one promotion attempt; `passed` False means the stage did not change."""

    ref: str
    from_stage: str
    to_stage: str
    passed: bool
    checks: list[dict[str, Any]]
    archived: list[str] = field(default_factory=list)  # refs moved out of production by this promotion
    policy_source: str | None = None  # "run config" or "override"; None for a move that is not gated

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [check for check in self.checks if not check["passed"]]


# ---- references -------------------------------------------------------------------------------
def resolve_model_ref(session: Session, ref: str) -> ModelVersion:
    """The version `ref` names (NAME@vN, NAME@N, NAME@latest, NAME@<stage>); errors list what exists."""
    name, sep, selector = ref.strip().partition("@")
    if not sep or not name or not selector:
        raise RegistryError(f"{ref!r} is not a model reference", fix=f"use {REF_FORMS}")
    model = _model(session, name)
    versions = list(model.versions)
    if not versions:
        raise RegistryError(f"model {name!r} has no versions (all were deleted)",
                            fix=f"register one: tunelab registry add RUN --name {name}")
    number = _version_number(selector)
    if number is not None:
        return _by_number(model, versions, number)
    if selector == "latest":
        return versions[-1]
    if selector in STAGES:
        return _by_stage(model, versions, selector)
    raise RegistryError(f"{ref!r}: {selector!r} is not a version, 'latest' or a stage", fix=f"use {REF_FORMS}")


def _model(session: Session, name: str) -> RegisteredModel:
    model = session.execute(select(RegisteredModel).where(RegisteredModel.name == name)).scalar_one_or_none()
    if model is not None:
        return model
    known = list(session.execute(select(RegisteredModel.name).order_by(RegisteredModel.name)).scalars())
    hint = closest(name, known)
    listing = f"known: {', '.join(known)}" if known else "no models are registered yet"
    raise RegistryError(f"no registered model {name!r} ({listing})",
                        fix=f"did you mean {hint!r}?" if hint else "tunelab registry add RUN --name NAME")


def _version_number(selector: str) -> int | None:
    match = re.fullmatch(r"v?(\d+)", selector)
    return int(match.group(1)) if match else None


def _by_number(model: RegisteredModel, versions: list[ModelVersion], number: int) -> ModelVersion:
    for version in versions:
        if version.version == number:
            return version
    raise RegistryError(f"model {model.name!r} has no version {number} (versions: {_listing(versions)})",
                        fix=f"use one of them, e.g. {model.name}@v{versions[-1].version}")


def _by_stage(model: RegisteredModel, versions: list[ModelVersion], stage: str) -> ModelVersion:
    """The newest version in `stage` (production holds at most one)."""
    found = [v for v in versions if v.stage == stage]
    if found:
        return found[-1]
    raise RegistryError(f"model {model.name!r} has no version in {stage} (versions: {_listing(versions)})",
                        fix=f"promote one: tunelab registry promote {model.name}@vN --to {stage}"
                        if stage in GATED else f"use one of {model.name}@v{versions[-1].version} or @latest")


def _listing(versions: list[ModelVersion]) -> str:
    return ", ".join(f"v{v.version} {v.stage}" for v in versions)


# ---- register -----------------------------------------------------------------------------------
def register(ws: Workspace, run_id_or_path: str | Path, name: str, *, note: str | None = None) -> ModelVersion:
    """Register a succeeded, recorded run as the next version of `name` (stage candidate) and write its card.

    The run must be in the workspace database because the version's lineage *is* the run's record;
    a folder that was never recorded has no trustworthy inputs or environment to point at.
    """
    _check_name(name)
    with ws.write() as txn:
        session = txn.session
        run = _recorded_run(session, run_id_or_path)
        _refuse_tampered(ws, run)
        model = _model_for(txn, name)
        _refuse_duplicate(model, run)
        number = _next_version(session, model)
        now, actor = now_iso(), current_actor()
        version = ModelVersion(model=model, version=number, run=run, stage="candidate", created_at=now,
                               created_by=actor)
        version.changes.append(StageChange(from_stage=REGISTERED, to_stage="candidate", passed=True, checks=[],
                                           reason=note, created_at=now, created_by=actor))
        session.add(version)
        session.flush()
        txn.audit("registry.add", "model_version", version.ref,
                  {"run": run.id, "version": number, "stage": "candidate", "note": note})
        _write_card(ws, version)
    return version


def _check_name(name: str) -> None:
    if not NAME_PATTERN.match(name or ""):
        raise RegistryError(f"model name {name!r} is not allowed",
                            fix="use letters, digits, '.', '_' and '-' (up to 100, starting with a letter or digit)")


def _recorded_run(session: Session, run_id_or_path: str | Path) -> Run:
    """The run by id, or by the folder it was written to (the folder's name is the run id)."""
    text = str(run_id_or_path)
    run = session.get(Run, text) or session.get(Run, Path(text).name)
    if run is None:
        raise RegistryError(f"run {text!r} is not recorded in this workspace",
                            fix="register a run that was trained inside the workspace (pass its id or folder)")
    if run.status != "succeeded":
        raise RegistryError(f"run {run.id} has status {run.status!r}; only succeeded runs can be registered",
                            fix="register a run that finished (train it again if it failed)")
    return run


def _refuse_tampered(ws: Workspace, run: Run) -> None:
    """A run whose artifacts or inputs no longer match its lineage cannot become a model version."""
    found = run_findings(ws, run)
    if found:
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        raise RegistryError(f"run {run.id} does not match its lineage: {found[0]}{more}",
                            fix=f"`tunelab verify {run.id}` lists every difference; restore the bytes or train again")


def _model_for(txn: Txn, name: str) -> RegisteredModel:
    session = txn.session
    model = session.execute(select(RegisteredModel).where(RegisteredModel.name == name)).scalar_one_or_none()
    if model is None:
        model = RegisteredModel(name=name, created_at=now_iso(), created_by=current_actor())
        session.add(model)
        session.flush()
        txn.audit("registry.create", "registered_model", name, {})
    return model


def _refuse_duplicate(model: RegisteredModel, run: Run) -> None:
    for version in model.versions:
        if version.run_id == run.id:
            raise RegistryError(f"run {run.id} is already registered as {model.name}@v{version.version} "
                                f"({version.stage})", fix=f"use {model.name}@v{version.version}")


def _next_version(session: Session, model: RegisteredModel) -> int:
    """One past the highest number ever given: existing versions and deleted ones (from the audit log)."""
    existing = session.execute(select(func.max(ModelVersion.version))
                               .where(ModelVersion.model_id == model.id)).scalar() or 0
    deleted = session.execute(select(AuditEntry.object_id).where(
        AuditEntry.action == "registry.delete",
        AuditEntry.object_id.startswith(f"{model.name}@v", autoescape=True))).scalars()
    numbers = [int(ref.rpartition("@v")[2]) for ref in deleted if ref.rpartition("@v")[2].isdigit()]
    return max([existing, *numbers]) + 1


# ---- promote ------------------------------------------------------------------------------------
def promote(ws: Workspace, ref: str, to_stage: str, *, reason: str | None = None,
            policy_override: PromotionPolicy | None = None) -> PromotionResult:
    """Move a version to `to_stage`, gated by the promotion policy for staging and production.

    A refusal is recorded (StageChange + `registry.promote.refused`) and returned, not raised, so the
    attempt and its failed checks reach the audit trail; the version's stage is left as it was.
    """
    with ws.write() as txn:
        version = resolve_model_ref(txn.session, ref)
        _check_move(version, to_stage)
        gated = to_stage in GATED
        source = None if not gated else "override" if policy_override is not None else "run config"
        checks = evaluate_policy(version.run, _policy_for(version, policy_override)) if gated else []
        if gated:  # whatever the policy says: the bytes promoted are the bytes evaluated
            checks.append(integrity_check(ws, version.run))
        result = PromotionResult(ref=version.ref, from_stage=version.stage, to_stage=to_stage,
                                 passed=all(c["passed"] for c in checks), checks=checks, policy_source=source)
        details = {"run": version.run_id, "from": version.stage, "to": to_stage, "reason": reason, "policy": source}
        if gated and policy_override is not None:
            details["policy_override"] = policy_override.model_dump()
        if result.passed:
            _accept(txn, ws, version, result, reason, details)
        else:
            _record(txn, version, to_stage, checks, reason, passed=False,
                    details={**details, "failed": [c["message"] for c in result.failed]})
            _flush_and_card(txn, ws, version)  # the card's history shows refused attempts too
    return result


def _policy_for(version: ModelVersion, override: PromotionPolicy | None) -> PromotionPolicy:
    return override if override is not None else run_policy(version.run)


def _accept(txn: Txn, ws: Workspace, version: ModelVersion, result: PromotionResult, reason: str | None,
            details: dict[str, Any]) -> None:
    if result.to_stage == "production":
        result.archived = _archive_production(txn, version, ws)
    _record(txn, version, result.to_stage, result.checks, reason, passed=True,
            details={**details, "checks": [c["name"] for c in result.checks]})
    version.stage = result.to_stage
    _flush_and_card(txn, ws, version)


def _check_move(version: ModelVersion, to_stage: str) -> None:
    if to_stage not in ALLOWED_FROM:
        raise RegistryError(f"cannot move {version.ref} to {to_stage!r}",
                            fix="use --to staging, production or archived")
    if version.stage == to_stage:
        raise RegistryError(f"{version.ref} is already in {to_stage}")
    if version.stage not in ALLOWED_FROM[to_stage]:
        raise RegistryError(f"{version.ref} cannot move from {version.stage} to {to_stage}",
                            fix="archive it instead" if version.stage == "production" else None)


def _record(txn: Txn, version: ModelVersion, to_stage: str, checks: list[dict[str, Any]], reason: str | None,
            *, passed: bool, details: dict[str, Any]) -> None:
    version.changes.append(StageChange(from_stage=version.stage, to_stage=to_stage, passed=passed, checks=checks,
                                       reason=reason, created_at=now_iso(), created_by=current_actor()))
    txn.audit("registry.promote" if passed else "registry.promote.refused", "model_version", version.ref, details)


def _archive_production(txn: Txn, version: ModelVersion, ws: Workspace) -> list[str]:
    """Archive the name's current production version(s), in the promoting transaction."""
    moved = []
    for other in version.model.versions:
        if other.id != version.id and other.stage == "production":
            _record(txn, other, "archived", [], f"replaced by {version.ref}", passed=True,
                    details={"run": other.run_id, "from": "production", "to": "archived",
                             "reason": f"replaced by {version.ref}", "policy": None})
            other.stage = "archived"
            _flush_and_card(txn, ws, other)
            moved.append(other.ref)
    return moved


def _flush_and_card(txn: Txn, ws: Workspace, version: ModelVersion) -> None:
    """Re-render the card after a stage change (refused ones too), so the file matches the history."""
    txn.session.flush()
    _write_card(ws, version)


# ---- the policy -------------------------------------------------------------------------------
def run_policy(run: Run) -> PromotionPolicy:
    """The promotion policy in the config recorded with the run."""
    return run_config(run).governance.promotion


def run_config(run: Run) -> Config:
    try:
        raw = yaml.safe_load(run.config_yaml)
    except yaml.YAMLError:
        raise RegistryError(f"run {run.id}: its recorded config is not valid YAML",
                            fix="pass a policy with --policy FILE") from None
    return validate(raw if isinstance(raw, dict) else {}, source=f"run {run.id} config")


def load_policy(path: Path) -> PromotionPolicy:
    """A PromotionPolicy from a YAML file holding its keys (min_metrics, max_forgetting, ...)."""
    raw = load_yaml_file(Path(path), "policy file")
    if isinstance(raw, dict) and isinstance(raw.get("promotion"), dict) and len(raw) == 1:
        raw = raw["promotion"]  # a `promotion:` section pasted from a config
    try:
        return PromotionPolicy.model_validate(raw or {})
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(top level)'}: {e['msg']}"
                             for e in err.errors())
        valid = ", ".join(PromotionPolicy.model_fields)
        raise ConfigError(f"{path}: {problems}", fix=f"valid keys: {valid}") from None


def evaluate_policy(run: Run, policy: PromotionPolicy) -> list[dict[str, Any]]:
    """One check {name, passed, value, limit, message} per requirement the policy enables.

    A requirement that cannot be measured fails: a missing metric, a max_forgetting on a run
    without retention sets, a run without a recorded data check or PII scan. Promotion means
    "we know it is good enough", so absence of evidence is not a pass. The exception is a run
    without evaluation gates: it had nothing to fail, and the policy's own checks still apply.
    """
    metrics = run.metrics or {}
    checks = [_metric_check(metrics, key, limit, minimum=True) for key, limit in policy.min_metrics.items()]
    checks += [_metric_check(metrics, key, limit, minimum=False) for key, limit in policy.max_metrics.items()]
    if policy.max_forgetting is not None:
        checks.append(_forgetting_check(metrics, policy.max_forgetting))
    if policy.require_gates_passed:
        checks.append(_gates_check(run.gates))
    if policy.require_data_check:
        checks.append(_data_check(run.data_check_passed))
    if policy.require_pii_clean:
        checks.append(_pii_check(run.pii_count))
    return checks


def _check(name: str, passed: bool, value: Any, limit: Any, message: str) -> dict[str, Any]:
    return {"name": name, "passed": bool(passed), "value": value, "limit": limit, "message": message}


def _metric_check(metrics: dict[str, Any], key: str, limit: float, *, minimum: bool) -> dict[str, Any]:
    name = f"{'min' if minimum else 'max'}_metric:{key}"
    value = _lookup(metrics, key)
    if not _is_number(value):
        known = ", ".join(_metric_keys(metrics)) or "none"
        return _check(name, False, None, limit, f"{key}: no such metric in the run's evaluation (has: {known})")
    passed = value >= limit if minimum else value <= limit
    relation = (">=" if passed else "is below the minimum") if minimum else ("<=" if passed else "is above the maximum")
    return _check(name, passed, value, limit, f"{key} {value:.4f} {relation} {limit:g}")


def _lookup(metrics: dict[str, Any], key: str) -> Any:
    node: Any = metrics
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _metric_keys(metrics: dict[str, Any]) -> list[str]:
    """'split.metric' for every number in the evaluated splits, for error messages."""
    return [f"{split}.{name}" for split in ("validation", "test", "generation")
            for name, value in (metrics.get(split) or {}).items() if _is_number(value)]


def _forgetting_check(metrics: dict[str, Any], limit: float) -> dict[str, Any]:
    sets = {name: entry.get("forgetting") for name, entry in (metrics.get("retention") or {}).items()
            if isinstance(entry, dict) and _is_number(entry.get("forgetting"))}
    if not sets:
        return _check("max_forgetting", False, None, limit,
                      f"forgetting: no retention measurements in the run, but max_forgetting {limit:g} is required")
    worst = max(sets, key=lambda name: sets[name])
    value = sets[worst]
    passed = value <= limit
    relation = "<=" if passed else "is above the maximum"
    return _check("max_forgetting", passed, value, limit,
                  f"forgetting on {worst} {100 * value:.1f}% {relation} {100 * limit:.1f}%")


def _gates_check(gates: dict[str, Any] | None) -> dict[str, Any]:
    if gates is None:
        return _check("gates_passed", True, None, True, "gates: none configured in the run")
    if gates.get("passed"):
        return _check("gates_passed", True, True, True, "the run's evaluation gates passed")
    failed = [c.get("message") or c.get("name") for c in gates.get("checks") or [] if not c.get("passed")]
    return _check("gates_passed", False, False, True,
                  "the run's evaluation gates failed" + (f": {'; '.join(map(str, failed))}" if failed else ""))


def _data_check(passed: bool | None) -> dict[str, Any]:
    if passed is None:
        return _check("data_check", False, None, True, "data check: none recorded for the run")
    return _check("data_check", passed, passed, True, "data check passed" if passed else "data check failed")


def _pii_check(count: int | None) -> dict[str, Any]:
    if count is None:
        return _check("pii_clean", False, None, 0, "PII: no scan recorded for the run")
    return _check("pii_clean", count == 0, count, 0,
                  "no PII in the training data" if count == 0 else f"PII: {count} findings in the training data")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# ---- cards --------------------------------------------------------------------------------------
def card_text(ws: Workspace, version: ModelVersion) -> str:
    """The version's model card, rendered from the database and the run folder (when it still exists)."""
    folder = run_dir(ws, version.run)
    evaluation = read_json_object(folder / "eval.json")
    if evaluation is None:
        evaluation = version.run.metrics or {}
    data = read_json_object(folder / "data.json")
    check = read_json_object(folder / "data_check.json")
    return render_card(version, evaluation, run_config(version.run), data=data, check=check)


def run_dir(ws: Workspace, run: Run) -> Path:
    path = Path(run.path)
    return path if path.is_absolute() else ws.root / path


def card_path(ws: Workspace, name: str, number: int) -> Path:
    return ws.artifacts / "registry" / name / f"v{number}" / CARD_NAME


def _write_card(ws: Workspace, version: ModelVersion) -> None:
    """Write the card inside the transaction: if the commit fails, the file is overwritten by the
    next version that takes this number, and nothing in the database points at it."""
    path = card_path(ws, version.model.name, version.version)
    atomic_write_text(path, card_text(ws, version))
    version.card_path = path.relative_to(ws.root).as_posix()


# ---- reading and deleting -----------------------------------------------------------------------
def list_models(ws: Workspace) -> list[dict[str, Any]]:
    """Every registered model with its version count and where its stages point."""
    with ws.read() as session:
        models = session.execute(select(RegisteredModel).order_by(RegisteredModel.name)).scalars()
        return [_model_summary(model) for model in models]


def _model_summary(model: RegisteredModel) -> dict[str, Any]:
    versions = list(model.versions)
    in_stage = {stage: [v.version for v in versions if v.stage == stage] for stage in STAGES}
    return {"name": model.name, "versions": len(versions), "latest": versions[-1].version if versions else None,
            "production": in_stage["production"][-1] if in_stage["production"] else None,
            "staging": in_stage["staging"], "candidate": in_stage["candidate"], "created_at": model.created_at,
            "created_by": model.created_by}


def show(ws: Workspace, ref: str) -> dict[str, Any]:
    """A model (NAME) with its versions, or one version (NAME@...) with its lineage and stage history."""
    with ws.read() as session:
        if "@" not in ref:
            model = _model(session, ref.strip())
            return {**_model_summary(model), "versions": [_version_summary(v) for v in model.versions]}
        return _version_detail(resolve_model_ref(session, ref))


def _version_summary(version: ModelVersion) -> dict[str, Any]:
    return {"ref": version.ref, "name": version.model.name, "version": version.version, "stage": version.stage,
            "run": version.run_id, "created_at": version.created_at, "created_by": version.created_by}


def _version_detail(version: ModelVersion) -> dict[str, Any]:
    run = version.run
    inputs = [{"split": i.split, "dataset": i.dataset_version.ref if i.dataset_version else None, "path": i.path,
               "sha256": i.sha256} for i in run.inputs]
    history = [{"from": c.from_stage or None, "to": c.to_stage, "passed": c.passed, "reason": c.reason,
                "created_at": c.created_at, "created_by": c.created_by,
                "failed": [k["message"] for k in c.checks if not k.get("passed")]} for c in version.changes]
    return {**_version_summary(version), "card_path": version.card_path, "run_path": run.path,
            "task": run.task, "config_sha256": run.config_sha256, "gates_passed": (run.gates or {}).get("passed"),
            "data_check_passed": run.data_check_passed, "pii_count": run.pii_count, "inputs": inputs,
            "started_from": ancestors(version.run), "history": history}


def ancestors(run: Run, limit: int = 20) -> list[str]:
    """The runs this one started from, nearest first (SFT -> DPO -> ...): each run folder's run.json
    names the run whose model its `model.source` was. The chain stops at a run that started from a
    pretrained model, or whose folder is gone."""
    chain, current = [], Path(run.path)
    while len(chain) < limit:
        try:
            parent = json.loads((current / "run.json").read_text()).get("model", {}).get("parent_run")
        except (OSError, ValueError):
            break
        if not parent or parent in chain or parent == run.id:
            break
        chain.append(parent)
        session = object_session(run)
        row = session.get(Run, parent) if session is not None else None
        current = Path(row.path) if row is not None else current.parent / parent
    return chain


def render(ws: Workspace, ref: str) -> str:
    """The card of `ref`, rendered now (what `registry card` prints)."""
    with ws.read() as session:
        return card_text(ws, resolve_model_ref(session, ref))


def delete_version(ws: Workspace, ref: str) -> str:
    """Remove a version that is not in production (with its stage history and card); returns its ref.

    The audit log keeps the deletion and the version's number stays taken, so `name@vN` always
    means one run in the log's history.
    """
    with ws.write() as txn:
        version = resolve_model_ref(txn.session, ref)
        if version.stage == "production":
            raise RegistryError(f"{version.ref} is in production and cannot be deleted",
                                fix="promote another version to production, or archive this one first")
        gone, stage, run_id, card = version.ref, version.stage, version.run_id, version.card_path
        for change in list(version.changes):
            txn.session.delete(change)
        txn.session.delete(version)
        txn.audit("registry.delete", "model_version", gone, {"run": run_id, "stage": stage})
    if card:
        _remove_card(ws.root / card)
    return gone


def _remove_card(path: Path) -> None:
    path.unlink(missing_ok=True)
    try:
        path.parent.rmdir()  # the v<N> folder, when nothing else was put there
    except OSError:
        pass
