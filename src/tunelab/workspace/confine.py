"""What a server job may read, and whether it may run code: the policy `tunelab serve` applies to
every config submitted over HTTP.

On one's own machine the CLI keeps full freedom: a config may name any path. A job submitted to the
server runs as the server's OS user, so a config could otherwise read any file that user can (and
read it back through samples, predictions and previews), or run code shipped with a model folder.
For jobs, then:

- data splits, replay and retention sources are a dataset version (`NAME@vN`), `general-text`, or a
  path inside the workspace or one of the extra read-only roots an admin set;
- `model.source` and retention heads are a catalog name, a hub id (read from the local hub cache),
  or a folder / `.gguf` file inside those roots; `lm.template` a named template or a `.jinja` file
  inside them;
- `output.dir` stays inside the workspace (the runner puts it in the job folder);
- paths are resolved against the workspace root (the job's working directory) with symlinks followed,
  and every file under a named folder is checked too, so a link inside an allowed folder cannot lead
  out of it;
- options that run code (`CODE_OPTIONS`) need a server started with `--allow-code` *and* a job
  submitted with an admin's token.

The same check runs twice: when the job is submitted (a 422 naming the key and the rule) and in the
job's own process before it reads anything (the runner hands it the policy in `TUNELAB_JOB_POLICY`),
so a root narrowed or a link planted while the job waited is still caught.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tunelab.config.schema import GrpoObjective
from tunelab.errors import ConfigError
from tunelab.models.catalog import CATALOG
from tunelab.models.resolve import looks_like_hub_id
from tunelab.runs.folder import now_iso
from tunelab.workspace.audit import current_actor
from tunelab.workspace.datasets import parse_ref
from tunelab.workspace.orm import ServerSetting

if TYPE_CHECKING:
    from tunelab.config import Config
    from tunelab.workspace.workspace import Workspace

POLICY_ENV = "TUNELAB_JOB_POLICY"
GENERAL_TEXT = "general-text"

#: dotted config keys whose setting runs code the user supplied, and how to read each from a config
CODE_OPTIONS: dict[str, Callable[[Config], bool]] = {
    "model.trust_remote_code": lambda c: bool(c.model.trust_remote_code),
    # a GRPO `function` reward imports and runs a Python file
    "objective.allow_code": lambda c: bool(getattr(c.objective, "allow_code", False)),
}


class ConfinementError(ConfigError):
    """A server job's config names something outside what the server lets jobs read or run."""

    http_status = 422


class CodeNotAllowed(ConfigError):
    """A server job asks to run user code without the server's flag or an admin's token."""

    http_status = 403


@dataclass(frozen=True)
class JobPolicy:
    """What one job may touch: the workspace, extra read-only roots, and whether user code may run."""

    workspace: Path
    read_roots: tuple[Path, ...] = ()
    allow_code: bool = False
    #: why code may not run, for the refusal (which of the two conditions failed)
    code_refusal: str = "server jobs may not run code shipped with models or configs"

    @property
    def roots(self) -> tuple[Path, ...]:
        return (self.workspace, *self.read_roots)

    def to_json(self) -> str:
        return json.dumps({"workspace": str(self.workspace), "read_roots": [str(p) for p in self.read_roots],
                           "allow_code": self.allow_code})

    @classmethod
    def from_json(cls, text: str) -> JobPolicy:
        raw = json.loads(text)
        return cls(Path(raw["workspace"]), tuple(Path(p) for p in raw.get("read_roots", ())),
                   bool(raw.get("allow_code", False)))

    @classmethod
    def from_environment(cls) -> JobPolicy | None:
        """The policy the job runner handed this process, or None (the CLI: no confinement)."""
        text = os.environ.get(POLICY_ENV)
        return cls.from_json(text) if text else None


@dataclass
class _Checker:
    policy: JobPolicy
    problems: list[str] = field(default_factory=list)

    def path(self, key: str, value: str, *, must_exist: bool = False) -> Path | None:
        """Record a problem unless `value` resolves (links followed) inside the roots; the resolved path."""
        text = value.strip()
        if text.startswith("~"):
            self.problems.append(f"{key}: {_short(text)} is a home-folder path; {_RULE}")
            return None
        raw = Path(text)
        candidate = raw if raw.is_absolute() else self.policy.workspace / raw
        resolved = candidate.resolve()
        if not _inside(resolved, self.policy.roots):
            self.problems.append(f"{key}: {_short(text)} is outside the workspace; {_RULE}")
            return None
        if resolved.is_dir():
            for inner in _files_under(resolved):
                target = inner.resolve()
                if not _inside(target, self.policy.roots):
                    self.problems.append(f"{key}: {_short(text)} holds {inner.relative_to(resolved)}, a link to a "
                                         f"file outside the workspace; {_RULE}")
                    return None
        elif must_exist and not resolved.exists():
            return None
        return resolved

    def data(self, key: str, value: str | None, *, general: bool = False) -> None:
        """A data input: a dataset version, `general-text` where allowed, or a confined path."""
        if value is None or parse_ref(value) is not None or (general and value == GENERAL_TEXT):
            return
        self.path(key, value)

    def model(self, key: str, value: str | None) -> None:
        """A model source: a catalog name, a hub id through the cache, or a confined folder/.gguf file."""
        if value is None:
            return

        text = value.strip()
        if text in CATALOG:
            return
        local = Path(text) if Path(text).is_absolute() else self.policy.workspace / text
        if looks_like_hub_id(text) and not local.exists():
            return  # read from the local hub cache, never from a path the config names
        self.path(key, value)


_RULE = ("server jobs read only dataset versions (NAME@vN), catalog models, hub ids in the local cache and "
         "paths inside the workspace (or a read-only root an admin added)")


def check_job_config(config: Config, policy: JobPolicy) -> None:
    """Refuse (ConfinementError, one line naming every key) a config that reads outside the policy's
    roots; refuse (CodeNotAllowed) one that runs user code when the policy does not allow it."""
    code = code_options(config)
    if code and not policy.allow_code:
        raise CodeNotAllowed(
            f"{', '.join(code)}: {policy.code_refusal}",
            fix="start the server with `tunelab serve --allow-code` and submit the job with an admin's token, "
                "or run it with `tunelab train` on your own machine")
    checker = _Checker(policy)
    for key, value, general_ok in _data_inputs(config):
        checker.data(key, value, general=general_ok)
    checker.model("model.source", config.model.source)
    if isinstance(config.eval.retention, list):
        for i, item in enumerate(config.eval.retention):
            checker.model(f"eval.retention[{i}].head", item.head)
    template = config.lm.template
    if template.endswith(".jinja"):
        checker.path("lm.template", template)
    if isinstance(config.objective, GrpoObjective):  # reward code and schema files
        for key, path in config.objective.files():
            checker.path(key, path)
    output = Path(config.output.dir)
    if not _inside((output if output.is_absolute() else policy.workspace / output).resolve(), (policy.workspace,)):
        checker.problems.append(f"output.dir: {_short(config.output.dir)} is outside the workspace; server jobs "
                                "write only inside it")
    if checker.problems:
        raise ConfinementError("; ".join(checker.problems),
                               fix="add the data with `tunelab data add` (or upload it) and name its version")


def code_options(config: Config) -> list[str]:
    """The code-running options a config turns on (dotted keys)."""
    return [key for key, is_on in CODE_OPTIONS.items() if is_on(config)]


def _data_inputs(config: Config) -> Iterator[tuple[str, str | None, bool]]:
    """(key, value, whether `general-text` is allowed there) for every data input a config names."""
    yield from ((f"data.{split}", path, False) for split, path in config.data.split_paths().items())
    if config.data.replay is not None:
        yield "data.replay.source", config.data.replay.source, True
    if isinstance(config.eval.retention, list):
        for i, item in enumerate(config.eval.retention):
            yield f"eval.retention[{i}].source", item.source, True


def _inside(path: Path, roots: tuple[Path, ...]) -> bool:
    return any(path == root.resolve() or path.is_relative_to(root.resolve()) for root in roots)


def _files_under(folder: Path) -> Iterator[Path]:
    """Every entry under `folder` (links not followed into, so each is checked as itself)."""
    for root, dirs, names in os.walk(folder):
        for name in (*names, *dirs):
            yield Path(root) / name


def _short(text: str, limit: int = 120) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


def check_read_roots(paths: list[str]) -> tuple[Path, ...]:
    """Validated extra read-only roots: absolute, existing folders, resolved; refuses `/` itself."""
    roots = []
    for text in paths:
        path = Path(text).expanduser()
        if not path.is_absolute():
            raise ConfigError(f"read root {text!r} is not an absolute path", fix="give the folder's absolute path")
        if not path.is_dir():
            raise ConfigError(f"read root {text!r} is not an existing folder", fix="create it or check the path")
        resolved = path.resolve()
        if resolved == Path(resolved.anchor):
            raise ConfigError(f"read root {text!r} is the whole filesystem", fix="name the folder that holds the data")
        roots.append(resolved)
    return tuple(dict.fromkeys(roots))


def describe(policy: JobPolicy) -> dict[str, Any]:
    return {"read_roots": [str(p) for p in policy.read_roots], "allow_code": policy.allow_code}


# ---- the server's settings ------------------------------------------------------------------
READ_ROOTS = "jobs.read_roots"


def job_policy(ws: Workspace, *, server_allows_code: bool, admin: bool) -> JobPolicy:
    """The policy for one submitter: the workspace, the stored read roots, and code only when the
    server was started with --allow-code and the submitter is an admin."""
    if not server_allows_code:
        refusal = "this server was not started with --allow-code, so its jobs may not run user code"
    elif not admin:
        refusal = "running user code in a server job needs an admin's token"
    else:
        refusal = ""
    return JobPolicy(ws.root, stored_read_roots(ws), server_allows_code and admin, refusal or JobPolicy.code_refusal)


def stored_read_roots(ws: Workspace) -> tuple[Path, ...]:
    with ws.read() as session:
        row = session.get(ServerSetting, READ_ROOTS)
        return tuple(Path(p) for p in (row.value if row else []))


def set_read_roots(ws: Workspace, paths: list[str]) -> tuple[Path, ...]:
    """Replace the extra read-only roots of server jobs (audited with the old and new lists)."""
    roots = check_read_roots(paths)
    value = [str(p) for p in roots]
    with ws.write() as txn:
        row = txn.session.get(ServerSetting, READ_ROOTS)
        before = row.value if row else []
        if row is None:
            row = ServerSetting(key=READ_ROOTS, value=value, updated_at=now_iso(), updated_by=current_actor())
            txn.session.add(row)
        else:
            row.value, row.updated_at, row.updated_by = value, now_iso(), current_actor()
        if before != value:
            txn.audit("server.read_roots", "server", READ_ROOTS, {"before": before, "after": value})
    return roots
