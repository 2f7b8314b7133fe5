"""What the workspace adds around a training run: dataset references resolved to bytes, the data
check and PII gate before the run exists, and lineage once it does.

Without a workspace a run still gets its data check (data_check.json/.html in the run folder) and
the PII gate; `NAME@version` references and `governance.pii: redact` need one.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunelab.config import Config
from tunelab.config.schema import GrpoObjective
from tunelab.errors import DataError
from tunelab.runs.folder import RunFolder
from tunelab.workspace import Workspace, WorkspaceError
from tunelab.workspace.confine import JobPolicy, check_job_config
from tunelab.workspace.datasets import add_version, content_files, content_sha256, parse_ref, resolve, version_path
from tunelab.workspace.lineage import InputRecord, hash_artifacts, record_data_check, record_end, record_start

log = logging.getLogger(__name__)
SPLITS = ("train", "validation", "test")


@dataclass
class Governed:
    """A config ready to train: `config` reads real paths; `original` is what the run folder records."""

    original: Config
    config: Config
    workspace: Workspace | None
    inputs: list[Any] = field(default_factory=list)  # lineage.InputRecord
    report: dict[str, Any] | None = None
    check_dir: Path | None = None
    tokenizer: Any = None  # the model's tokenizer, loaded for the data check; the run reuses it

    def cleanup(self) -> None:
        if self.check_dir is not None:
            shutil.rmtree(self.check_dir, ignore_errors=True)
            self.check_dir = None


def resolve_data(config: Config, workspace: Workspace | None = None) -> tuple[Config, list[Any], Workspace | None]:
    """Replace `NAME@version` references (data splits, replay and retention sources) with the paths of
    their bytes, and hash every input the run reads."""
    workspace = workspace or Workspace.find()
    if workspace is not None:
        workspace.check_schema()
    inputs: list[Any] = []
    data_updates: dict[str, Any] = {}
    for split, value in config.data.split_paths().items():
        data_updates[split] = _resolve_one(workspace, f"data.{split}", split, value, inputs)
    replay = config.data.replay
    if replay is not None and parse_ref(replay.source) is not None:
        source = _resolve_one(workspace, "data.replay.source", "replay", replay.source, inputs)
        data_updates["replay"] = replay.model_copy(update={"source": source})
    updates: dict[str, Any] = {"data": config.data.model_copy(update=data_updates)}
    if isinstance(config.eval.retention, list):
        sets = []
        for i, item in enumerate(config.eval.retention):
            if parse_ref(item.source) is None:
                sets.append(item)
                continue
            source = _resolve_one(workspace, f"eval.retention[{i}].source", "retention", item.source, inputs)
            sets.append(item.model_copy(update={"source": source, "name": item.name or item.source}))
        updates["eval"] = config.eval.model_copy(update={"retention": sets})
    if isinstance(config.objective, GrpoObjective):
        # a GRPO reward's code (or schema) file decides the result as much as the data does
        for key, path in config.objective.files():
            _resolve_one(workspace, key, "reward", path, inputs)
    return config.model_copy(update=updates), inputs, workspace


def _resolve_one(workspace: Workspace | None, key: str, role: str, value: str, inputs: list[Any]) -> str:
    """The path to read for one configured input; appends its lineage record (bytes' sha256, version)."""
    if parse_ref(value) is None:
        path = Path(value)
        if path.exists():
            inputs.append(InputRecord(role, value, content_sha256(path, content_files(path))))
        return value
    if workspace is None:
        raise WorkspaceError(f"{key}: {value!r} names a dataset version, but there is no workspace here",
                             fix="run inside the workspace that holds it (or set TUNELAB_WORKSPACE)")
    path, version = resolve(workspace, value)
    # A file inside a folder version has its own hash; a whole version is its version hash.
    whole = path == version_root(workspace, version)
    inputs.append(InputRecord(role, value, version.sha256 if whole else content_sha256(path, content_files(path)),
                              version))
    return str(path)


def version_root(workspace: Workspace, version: Any) -> Path:
    return version_path(workspace, version, verify=False)


def prepare(config: Config) -> Governed:
    """Resolve data, run the data check, apply `governance.pii` (block, redact or warn).

    A server job is first held to the policy its runner handed it (workspace/confine.py), before
    anything is read: the submission was checked too, but links and roots can change while it waits."""
    policy = JobPolicy.from_environment()
    if policy is not None:
        check_job_config(config, policy)
    resolved, inputs, workspace = resolve_data(config)
    governed = Governed(config, resolved, workspace, inputs)
    governed.check_dir = Path(tempfile.mkdtemp(prefix="tunelab-check-"))
    try:
        _check(governed)
    except BaseException:
        governed.cleanup()
        raise
    return governed


def _check(governed: Governed) -> None:
    # the data check loads tokenizers and datasets; server job submission imports this module without them
    from tunelab.recipes.config_data import load_check_tokenizer, pii_block_error, run_data_check, write_report

    policy = governed.config.governance.pii
    # The run's own tokenizer: data_check.json then has token lengths and truncation, as `data check` does.
    tokenizer = governed.tokenizer = load_check_tokenizer(governed.config)
    report = run_data_check(governed.config, out_dir=governed.check_dir, tokenizer=tokenizer)
    found = (report.get("pii") or {}).get("count", 0)
    if found and policy == "block":
        raise pii_block_error(report)
    if found and policy == "redact":
        redacted = _redact(governed)
        report = run_data_check(governed.config, out_dir=governed.check_dir, tokenizer=tokenizer)
        report["redacted"] = redacted  # kept in data_check.json too: the model card and promotion read it
        title = f"Data check: {governed.config.output.name or governed.config.task}"
        write_report(report, governed.check_dir, title=title)
    elif found and policy == "warn":
        log.warning("data check: %d PII finding(s) in the training data (governance.pii: warn); "
                    "see data_check.html in the run folder", found)
    governed.report = report


def refuse_check_errors(governed: Governed) -> None:
    """Stop on the data check's errors (governance.on_data_check_errors: block), or log them (warn).

    Called after the task prepared its data, so a task's own, more precise error (the file and line of
    an empty row, a missing column with its suggestion) is the one a user sees first."""
    errors = (governed.report or {}).get("errors", [])
    if errors and governed.config.governance.on_data_check_errors == "block":
        more = f" (and {len(errors) - 1} more: `tunelab data check` lists them)" if len(errors) > 1 else ""
        raise DataError(f"the data check found errors: {errors[0]}{more}",
                        fix="fix the data, or set governance.on_data_check_errors: warn to train anyway")
    for error in errors:
        log.warning("data check: %s", error)


def _redact(governed: Governed) -> list[dict[str, Any]]:
    """Write a redacted copy of every split that holds PII as a new dataset version, and train on it."""
    # as in _check: the data check's imports are heavy, job submission needs none of them
    from tunelab.recipes.config_data import redact_file

    workspace = governed.workspace
    if workspace is None:
        raise WorkspaceError("governance.pii: redact writes a new dataset version, which needs a workspace",
                             fix="run `tunelab init` here, or use governance.pii: block or warn")
    updates: dict[str, str] = {}
    done: list[dict[str, Any]] = []
    inputs = {item.split: item for item in governed.inputs}
    for split, path_text in governed.config.data.split_paths().items():
        source = Path(path_text)
        if source.is_dir():
            raise DataError(f"data.{split}: governance.pii: redact works on data files, {source} is a folder",
                            fix="name the file (NAME@vN/file.jsonl), or use block or warn")
        staging = Path(tempfile.mkdtemp(prefix="tunelab-redact-"))
        try:
            target = staging / f"{source.stem}.redacted.jsonl"
            count = redact_file(source, target, governed.config)
            if not count:
                continue
            ref = parse_ref(inputs[split].path)
            parent = inputs[split].version
            name = ref.name if ref is not None and not ref.subpath else _dataset_name(source)
            if parent is None or (ref is not None and ref.subpath):
                parent = add_version(workspace, name, source, note=f"original of a redacted data.{split}").version
            note = f"redacted: {count} PII value(s) replaced, from {parent.ref}"
            added = add_version(workspace, name, target, note=note, parent=parent).version
        finally:
            shutil.rmtree(staging, ignore_errors=True)

        updates[split] = str(version_path(workspace, added))
        inputs[split] = InputRecord(split, added.ref, added.sha256, added)
        done.append({"split": split, "from": parent.ref, "to": added.ref, "replacements": count})
        log.info("data.%s: %d PII value(s) redacted into %s", split, count, added.ref)
    governed.config = governed.config.model_copy(update={"data": governed.config.data.model_copy(update=updates)})
    # The run records the redacted versions as its data, so its config names them too.
    original_data = governed.original.data.model_copy(update={d["split"]: d["to"] for d in done})
    governed.original = governed.original.model_copy(update={"data": original_data})
    governed.inputs = [inputs[s] for s in SPLITS if s in inputs] + [
        item for item in governed.inputs if item.split not in SPLITS]
    return done


def _dataset_name(path: Path) -> str:
    import re

    name = re.sub(r"[^A-Za-z0-9._-]+", "-", path.stem).strip("-.") or "data"
    return name[:200]


def start(governed: Governed, run: RunFolder, environment: dict[str, Any], *, resumed: bool,
          reproduces: str | None = None, origin: dict[str, Any] | None = None) -> None:
    """On the main process, once the run folder exists: keep the data check in it, record lineage."""
    report_path = None
    if governed.check_dir is not None:
        for name in ("data_check.json", "data_check.html"):
            if (governed.check_dir / name).is_file():
                shutil.copy2(governed.check_dir / name, run.path / name)
        report_path = run.path / "data_check.json"
        governed.cleanup()
        if governed.report is not None:
            log.info("data check %s: %d error(s), %d warning(s), %d PII finding(s); %s",
                     "passed" if governed.report.get("passed") else "FAILED", len(governed.report.get("errors", [])),
                     len(governed.report.get("warnings", [])), (governed.report.get("pii") or {}).get("count", 0),
                     run.path / "data_check.html")
    if governed.workspace is None:
        return

    record_start(governed.workspace, run, governed.original, governed.inputs, environment, resumed=resumed,
                 reproduces=reproduces, origin=origin)
    if governed.report is not None:
        record_data_check(governed.workspace, run.id, governed.report, report_path)


def hash_run(governed: Governed, run: RunFolder) -> list[dict[str, Any]] | None:
    """The artifact hashes lineage records (run.json aside, which is still to be written); None
    outside a workspace, where nothing records them."""
    if governed.workspace is None:
        return None

    return hash_artifacts(run.path, skip=("run.json",))


def end(governed: Governed, run: RunFolder, status: str, *, error: str | None = None,
        artifacts: list[dict[str, Any]] | None = None) -> None:
    """Record how the run ended; `artifacts` are hashes taken already (hash_run), else they are taken now."""
    governed.cleanup()
    if governed.workspace is None:
        return

    try:
        record_end(governed.workspace, run, status, error=error, artifacts=artifacts)
    except Exception as err:  # noqa: BLE001 - the run itself is on disk; do not hide its own outcome behind this
        log.error("could not record the end of run %s in the workspace: %s", run.id, err)
