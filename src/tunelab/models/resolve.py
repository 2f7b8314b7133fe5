"""Resolve `model.source` to a local Hugging Face folder, and load its tokenizer."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tunelab.choices import closest
from tunelab.config.schema import ModelConfig
from tunelab.errors import ModelError
from tunelab.models.catalog import CATALOG
from tunelab.models.fingerprint import fingerprint_folder, safetensors_param_count

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

# org/name as the hub spells repo ids; anything path-like ("./x", "/x", "~/x", "a/b/c") is a path.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")
_TRUE = {"1", "on", "yes", "true"}
VOCAB_FILES = frozenset(
    {"tokenizer.json", "vocab.txt", "vocab.json", "tokenizer.model", "spiece.model", "sentencepiece.bpe.model"}
)


@dataclass(frozen=True)
class ResolvedModel:
    """Where a model source lives locally, and a content fingerprint of it."""

    source: str  # what the user wrote in model.source
    kind: str  # "catalog" | "local" | "hub" | "gguf" | "run"
    path: Path  # local HF folder: config.json, weights, tokenizer files
    fingerprint: str  # sha256 over config.json, weight and tokenizer files (see fingerprint_folder)
    parent_run: str | None = None  # kind "run": the id of the tunelab run whose model this starts from

    def to_dict(self) -> dict[str, str]:
        """JSON-friendly form for the run record."""
        record = {"source": self.source, "kind": self.kind, "path": str(self.path), "fingerprint": self.fingerprint}
        return record | ({"parent_run": self.parent_run} if self.parent_run else {})


def resolve_model(cfg: ModelConfig) -> ResolvedModel:
    """Resolve `cfg.source`: a catalog name, a local folder, a .gguf file, or a hub id in the local cache.

    Raises ModelError (one line, naming the source and the fix) when it is none of these.
    """
    source = cfg.source.strip()
    kind, path = _locate(source, cfg)
    parent = path.parent.name if kind == "run" else None
    return ResolvedModel(source=cfg.source, kind=kind, path=path, fingerprint=fingerprint_folder(path),
                         parent_run=parent)


def _locate(source: str, cfg: ModelConfig) -> tuple[str, Path]:
    if source in CATALOG:
        return "catalog", CATALOG.get(source).materialize()
    local = Path(source).expanduser()
    if local.is_dir() and (local / "run.json").is_file():
        return "run", _run_model(source, local.resolve())
    if local.is_dir():
        return "local", _checked_local_folder(source, local.resolve())
    if source.lower().endswith(".gguf"):
        if not local.is_file():
            raise ModelError(f"model.source GGUF file {source!r} does not exist", fix="check the path")
        # converting imports torch and gguf; resolving a hub id or folder (config validation, the server) does not
        from tunelab.models.gguf_convert import convert_gguf

        return "gguf", convert_gguf(local)
    if local.exists():
        raise ModelError(
            f"model.source {source!r} is a file, not a model folder",
            fix="point it at a Hugging Face model folder (with config.json), a .gguf file or a catalog name",
        )
    if looks_like_hub_id(source):
        return "hub", _hub_snapshot(source, cfg.revision)
    raise _unknown_source(source)


def _run_model(source: str, run: Path) -> Path:
    """The model a finished tunelab run saved (LoRA merged), so one run can start from another — SFT,
    then preference tuning — with the parent's id in the child's lineage."""
    try:
        status = json.loads((run / "run.json").read_text()).get("status")
    except (OSError, ValueError) as err:
        raise ModelError(f"model.source {source!r}: its run.json cannot be read ({err})",
                         fix="point model.source at a finished run folder") from err
    if status != "succeeded" or not (run / "model" / "config.json").is_file():
        raise ModelError(f"model.source {source!r} is a tunelab run that did not finish (status {status}), so it "
                         "has no complete model", fix="resume or rerun it, or start from its base model")
    return run / "model"


def _checked_local_folder(source: str, folder: Path) -> Path:
    if (folder / "config.json").is_file():
        return folder
    ggufs = sorted(folder.glob("*.gguf"))
    fix = (
        f"set model.source to the GGUF file, e.g. {str(folder / ggufs[0].name)!r}"
        if ggufs
        else "point it at a Hugging Face model folder (the one with config.json)"
    )
    raise ModelError(f"model folder {source!r} has no config.json", fix=fix)


def _unknown_source(source: str) -> ModelError:
    hint = closest(source, CATALOG.names())
    if hint:
        fix = f"did you mean the catalog model {hint!r}? (`tunelab models list`)"
    else:
        fix = (
            "use a local model folder (with config.json), a .gguf file, a hub id (org/name) "
            f"or a catalog name: {', '.join(CATALOG.names())}"
        )
    if _looks_like_path(source):
        return ModelError(f"model.source {source!r} does not exist (no such folder or file)", fix=fix)
    return ModelError(f"model.source {source!r} is not a catalog name, a local path or a hub id (org/name)", fix=fix)


def looks_like_hub_id(source: str) -> bool:
    """`org/name` as the hub spells repo ids (a relative path of two parts looks the same: callers
    check the local path first)."""
    return bool(_HUB_ID.match(source.strip()))


def _looks_like_path(source: str) -> bool:
    return source.startswith((".", "~", "/")) or os.sep in source or "\\" in source


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache, read from the environment now (huggingface_hub reads it at import)."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.path.expandvars(os.environ[var])).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "huggingface"
    )
    return Path(os.path.expandvars(home)).expanduser() / "hub"


def hub_offline() -> bool:
    """True when HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) is set now.

    huggingface_hub freezes the flag at import; if it was set then, a download attempt fails with
    OfflineModeIsEnabled, which ends in the same ModelError.
    """
    env = (os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or "").strip().lower()
    return env in _TRUE


def _hub_snapshot(repo_id: str, revision: str | None) -> Path:
    from huggingface_hub import snapshot_download

    cache = hub_cache_dir()
    named = f"{repo_id}@{revision}" if revision else repo_id
    try:
        folder = Path(snapshot_download(repo_id, revision=revision, cache_dir=cache, local_files_only=True))
    except Exception as local_err:  # noqa: BLE001 - any cache miss means "try the network"
        folder = _partial_snapshot(local_err)
        if folder is None:
            folder = _download(repo_id, revision, cache, named)
    if not (folder / "config.json").is_file():
        raise ModelError(
            f"hub model {named!r} ({folder}) has no config.json",
            fix="use a repo with Hugging Face transformers weights, or a .gguf file",
        )
    return folder


def _partial_snapshot(err: Exception) -> Path | None:
    # A snapshot fetched with `hf download --include ...` is "incomplete" by the cached tree listing,
    # yet usable when it holds the config; accept it rather than demanding the whole repo.
    folder = getattr(err, "snapshot_path", None)
    if folder and (Path(folder) / "config.json").is_file():
        return Path(folder)
    return None


def _download(repo_id: str, revision: str | None, cache: Path, named: str) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

    fix = (
        f"download it where there is network (`hf download {repo_id}"
        + (f" --revision {revision}" if revision else "")
        + "`), or set model.source to a local folder, a .gguf file or a catalog name (`tunelab models list`)"
    )
    if hub_offline():
        raise ModelError(
            f"model {named!r} is not in the local Hugging Face cache ({cache}) and HF_HUB_OFFLINE is set", fix=fix
        )
    try:
        return Path(snapshot_download(repo_id, revision=revision, cache_dir=cache))
    except (RepositoryNotFoundError, GatedRepoError, RevisionNotFoundError) as err:
        raise ModelError(
            f"the hub has no model {named!r} that this machine may download ({type(err).__name__})",
            fix="check the id and revision, log in with `hf auth login` for gated or private repos, "
            "or set model.source to a local folder, a .gguf file or a catalog name (`tunelab models list`)",
        ) from None
    except Exception as err:  # noqa: BLE001 - any other failure means the hub could not be used
        reason = type(err).__name__
        raise ModelError(
            f"model {named!r} is not in the local Hugging Face cache ({cache}) and the hub is unreachable ({reason})",
            fix=fix,
        ) from None


def load_tokenizer(resolved: ResolvedModel, cfg: ModelConfig) -> PreTrainedTokenizerBase:
    """AutoTokenizer for the resolved folder, with a pad token guaranteed.

    Causal LMs often ship without a pad token; eos (then sep, unk) stands in, so no new embedding row
    is ever needed.
    """
    from transformers import AutoTokenizer

    if not cfg.trust_remote_code and not any(_is_vocab_file(p.name) for p in resolved.path.iterdir()):
        # transformers 5 would silently build an empty tokenizer (every word -> unk) from config.json alone.
        raise ModelError(
            f"model {resolved.source!r} ({resolved.path}) has no tokenizer vocabulary",
            fix="add the tokenizer files (tokenizer.json, vocab.txt, tokenizer.model, ...) next to config.json",
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(resolved.path), trust_remote_code=cfg.trust_remote_code)
    except (OSError, ValueError, KeyError, TypeError, ImportError) as err:
        first_line = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ModelError(
            f"cannot load the tokenizer of model {resolved.source!r} from {resolved.path}: {first_line}",
            fix="the folder needs tokenizer files (tokenizer.json or vocab files); set model.trust_remote_code "
            "only if the model needs custom code and you trust it",
        ) from None
    if tokenizer.pad_token is None:
        stand_in = next(
            (t for t in (tokenizer.eos_token, getattr(tokenizer, "sep_token", None), tokenizer.unk_token) if t), None
        )
        if stand_in is None:
            raise ModelError(
                f"the tokenizer of model {resolved.source!r} has no pad, eos, sep or unk token to pad with",
                fix="use a model whose tokenizer defines a pad or eos token",
            )
        tokenizer.pad_token = stand_in
    return tokenizer


def _is_vocab_file(name: str) -> bool:
    return name in VOCAB_FILES or name.endswith(".tiktoken")


def model_summary(resolved: ResolvedModel) -> dict[str, Any]:
    """Cheap facts for listings and run records, read from config.json and the safetensors headers."""
    config = json.loads((resolved.path / "config.json").read_text())
    return {
        "model_type": config.get("model_type"),
        "architectures": config.get("architectures") or [],
        "hidden_size": config.get("hidden_size"),
        "num_hidden_layers": config.get("num_hidden_layers"),
        "vocab_size": config.get("vocab_size"),
        "num_parameters": safetensors_param_count(resolved.path),
    }
